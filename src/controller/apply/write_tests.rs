//! The write path against a fake API server (`tower-test`, as kube-rs recommends for unit tests
//! of controllers): every request `apply_plan` makes is recorded and answered here — accepted
//! like the API server would, or refused with the status a policy, a conflict, throttling or an
//! outage gives — so that what the operator sends and how it takes each answer is checked
//! without a control plane, in milliseconds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::*;
use crate::api::{EmrRayClusterSpec, GoneClusterPolicy, WriteRefusal};
use crate::controller::cache::MirrorChanges;
use crate::controller::cache::MirrorStore;
use crate::controller::cache::SeenStatus;
use crate::controller::write::next_write_trouble;
use crate::metrics::{KubeResource, RefusalLabels, WriteLabels, WriteOperation};

const NS: &str = "team";
const OWNER_UID: &str = "ws-uid";
const MIRRORS: &str = "/apis/emr.aliyun.io/v1alpha1/namespaces/team/emrrayclusters";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team/events";

/// One request as the fake API server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    content_type: Option<String>,
    body: Value,
}

impl Seen {
    /// A request on the mirror `name` (`sub`: "" or "/status").
    fn on(&self, method: Method, name: &str, sub: &str) -> bool {
        self.method == method && self.path == format!("{MIRRORS}/{name}{sub}")
    }

    fn is_event(&self) -> bool {
        self.path.starts_with(EVENTS)
    }
}

/// How the fake API server answers a request: `None` accepts it (as a real one would), `Some`
/// refuses it with this HTTP code and `Status` body.
type Refuse = Box<dyn Fn(&Seen) -> Option<(u16, Value)> + Send + Sync>;

/// A `Status` body as the API server sends it with a refusal.
fn status(code: u16, reason: &str, message: &str, retry_after: Option<u32>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(secs) = retry_after {
        s["details"] = json!({ "retryAfterSeconds": secs });
    }
    s
}

/// Plays the API server for `client`'s requests: server-side applies merge into its objects,
/// deletes remove them, lists (by name) show them, Events are accepted; `refuse` picks the
/// requests it refuses.
fn api_server(objects: Vec<EmrRayCluster>, refuse: Refuse) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut store: HashMap<String, Value> = objects
            .into_iter()
            .map(|o| (o.metadata.name.clone().unwrap_or_default(), json!(o)))
            .collect();
        let mut version = 100;
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let req = Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            log.lock().unwrap().push(req.clone());
            version += 1;
            let (code, body) = refuse(&req).unwrap_or_else(|| accept(&mut store, &req, version));
            send.send_response(
                Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, NS), seen)
}

/// What the API server does with a request it accepts.
fn accept(store: &mut HashMap<String, Value>, req: &Seen, version: u64) -> (u16, Value) {
    if req.is_event() {
        // A creation (POST) or a series update (PATCH): the Event as sent.
        return (201, req.body.clone());
    }
    let rest = req.path.strip_prefix(MIRRORS).unwrap_or_default();
    let (name, sub) = match rest.trim_start_matches('/').split_once('/') {
        Some((n, s)) => (n.to_string(), s),
        None => (rest.trim_start_matches('/').to_string(), ""),
    };
    let not_found = || {
        (
            404,
            status(404, "NotFound", &format!("\"{name}\" not found"), None),
        )
    };
    match req.method {
        Method::PATCH => {
            if sub == "status" && !store.contains_key(&name) {
                return not_found();
            }
            let obj = store.entry(name.clone()).or_insert_with(
                || json!({ "metadata": { "uid": format!("uid-{name}"), "generation": 1 } }),
            );
            for (k, v) in req.body.as_object().into_iter().flatten() {
                match (k.as_str(), v) {
                    ("metadata", Value::Object(m)) => {
                        let meta = obj["metadata"].as_object_mut().unwrap();
                        meta.extend(m.clone());
                    }
                    _ => obj[k] = v.clone(),
                }
            }
            obj["metadata"]["namespace"] = json!(NS);
            obj["metadata"]["resourceVersion"] = json!(version.to_string());
            (200, obj.clone())
        }
        Method::DELETE => match store.remove(&name) {
            Some(obj) => (200, obj),
            None => not_found(),
        },
        // A LIST by name (`fieldSelector=metadata.name=<name>`), as the operator reads a mirror.
        Method::GET if name.is_empty() => {
            let wanted = req
                .query
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name="));
            let items: Vec<Value> = store
                .iter()
                .filter(|(n, _)| wanted.is_none_or(|w| w == n.as_str()))
                .map(|(_, o)| o.clone())
                .collect();
            let list = json!({
                "apiVersion": "emr.aliyun.io/v1alpha1",
                "kind": "EmrRayClusterList",
                "metadata": { "resourceVersion": version.to_string() },
                "items": items,
            });
            (200, list)
        }
        _ => (
            405,
            status(405, "MethodNotAllowed", "not played here", None),
        ),
    }
}

fn owner() -> Owner {
    Owner {
        namespace: NS.into(),
        name: "ws".into(),
        uid: OWNER_UID.into(),
        workspace_id: "w-1".into(),
        region_id: "cn-hangzhou".into(),
        policy: GoneClusterPolicy::Delete,
        shard: None,
    }
}

fn running(state: &str) -> EmrRayClusterStatus {
    EmrRayClusterStatus {
        state: Some(state.into()),
        ..Default::default()
    }
}

/// A mirror of cluster `cluster` as the operator wrote it, in state `state`.
fn mirror(cluster: &str, state: &str) -> EmrRayCluster {
    let o = owner();
    let mut m = EmrRayCluster::new(&format!("m-{cluster}"), o.spec(cluster));
    m.metadata.namespace = Some(NS.into());
    m.metadata.uid = Some(format!("uid-m-{cluster}"));
    m.metadata.resource_version = Some("7".into());
    m.metadata.generation = Some(1);
    m.metadata.labels = Some(o.labels(cluster));
    m.metadata.annotations =
        Some([(ANNOTATION_CLUSTER_ID.to_string(), cluster.to_string())].into());
    m.metadata.owner_references = Some(vec![o.reference()]);
    m.status = Some(running(state));
    m
}

fn create(cluster: &str) -> Action {
    Action {
        name: format!("m-{cluster}"),
        cluster_id: cluster.into(),
        prev: None,
        write: Write::Apply(running("Running")),
        event: Some(MirrorEvent::Created {
            state: Some("Running".into()),
        }),
    }
}

fn change_state(prev: &EmrRayCluster, to: &str) -> Action {
    let spec: &EmrRayClusterSpec = &prev.spec;
    Action {
        name: prev.metadata.name.clone().unwrap(),
        cluster_id: spec.cluster_id.clone(),
        prev: Some(Arc::new(CachedMirror::of(prev))),
        write: Write::Status(running(to)),
        event: Some(MirrorEvent::StateChanged {
            from: prev.status.as_ref().and_then(|s| s.state.clone()),
            to: Some(to.into()),
            message: None,
        }),
    }
}

fn delete(prev: &EmrRayCluster) -> Action {
    Action {
        name: prev.metadata.name.clone().unwrap(),
        cluster_id: prev.spec.cluster_id.clone(),
        prev: Some(Arc::new(CachedMirror::of(prev))),
        write: Write::Delete,
        event: Some(MirrorEvent::Deleted),
    }
}

fn plan(actions: Vec<Action>) -> Plan {
    Plan {
        mirrors: actions.len(),
        actions,
        ..Default::default()
    }
}

/// What [`Writer`] borrows, against the fake API server.
struct Harness {
    client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
    owner: Owner,
    store: Arc<MirrorStore>,
    cache: MirrorCache,
    recorder: Recorder,
    metrics: Metrics,
    limiter: WriteLimiter,
}

impl Harness {
    /// The operator's view: the watch has shown `existing`, which the API server has too.
    fn new(existing: Vec<EmrRayCluster>, refuse: Refuse) -> Self {
        Self::with(existing.clone(), existing, refuse)
    }

    /// The API server has `objects`, the watch has shown `watched`.
    fn with(objects: Vec<EmrRayCluster>, watched: Vec<EmrRayCluster>, refuse: Refuse) -> Self {
        let (client, seen) = api_server(objects, refuse);
        let store = Arc::new(MirrorStore::default());
        store.apply(&watcher::Event::Init);
        for m in watched {
            store.apply(&watcher::Event::InitApply(m));
        }
        store.apply(&watcher::Event::InitDone);
        let cache = MirrorCache::new(store.clone(), Arc::new(MirrorChanges::default()));
        Harness {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "emr-ray-operator".into(),
                    instance: None,
                },
            ),
            client,
            seen,
            owner: owner(),
            store,
            cache,
            metrics: Metrics::default(),
            // No waiting for the write budget in these tests.
            limiter: WriteLimiter::new(10_000, 10_000, WRITE_CONCURRENCY),
        }
    }

    async fn apply(&self, plan: Plan, probe: bool) -> WriteReport {
        self.apply_written(plan, probe).await.0
    }

    /// [`Self::apply`], with the mirrors the pass wrote.
    async fn apply_written(&self, plan: Plan, probe: bool) -> (WriteReport, Written) {
        let w = Writer {
            api: Api::namespaced(self.client.clone(), NS),
            owner: &self.owner,
            workspace: ObjectReference {
                api_version: Some("emr.aliyun.io/v1alpha1".into()),
                kind: Some("EmrWorkspace".into()),
                namespace: Some(NS.into()),
                name: Some("ws".into()),
                uid: Some(OWNER_UID.into()),
                ..Default::default()
            },
            cache: &self.cache,
            recorder: &self.recorder,
            metrics: &self.metrics,
            limiter: &self.limiter,
            now: &"2026-01-01T00:00:00Z".parse().expect("a time"),
        };
        apply_plan(&w, plan, probe).await
    }

    /// The requests so far, taken (the next call sees only later ones).
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn writes(&self, operation: &str) -> u64 {
        let operation = *WriteOperation::ALL
            .iter()
            .find(|o| o.as_str() == operation)
            .expect("a write operation");
        self.metrics
            .kube_writes
            .get_or_create(&WriteLabels {
                resource: KubeResource::EmrRayClusters,
                operation,
            })
            .get()
    }

    fn refusals(&self, refusal: WriteRefusal) -> u64 {
        self.metrics
            .kube_write_refusals
            .get_or_create(&RefusalLabels {
                resource: KubeResource::EmrRayClusters,
                reason: refusal.metric_label().into(),
            })
            .get()
    }
}

/// A server-side apply by the operator: PATCH with its field manager, forced, as an apply
/// patch, the body naming the kind and the object.
fn assert_ssa(r: &Seen, name: &str) {
    assert_eq!(r.method, Method::PATCH, "{r:?}");
    assert_eq!(
        r.query.get("fieldManager").map(String::as_str),
        Some(FIELD_MANAGER),
        "{r:?}"
    );
    assert_eq!(
        r.query.get("force").map(String::as_str),
        Some("true"),
        "{r:?}"
    );
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{r:?}"
    );
    assert_eq!(r.body["apiVersion"], "emr.aliyun.io/v1alpha1");
    assert_eq!(r.body["kind"], "EmrRayCluster");
    assert_eq!(r.body["metadata"]["name"], name);
}

fn accept_all() -> Refuse {
    Box::new(|_| None)
}

/// Refuses the requests `matches` picks with `answer`, accepts the rest.
fn refuse_when(matches: impl Fn(&Seen) -> bool + Send + Sync + 'static, answer: Value) -> Refuse {
    let code = answer["code"].as_u64().unwrap() as u16;
    Box::new(move |r| matches(r).then(|| (code, answer.clone())))
}

#[tokio::test]
async fn a_new_mirror_is_applied_then_its_status_and_announced() {
    let h = Harness::new(vec![], accept_all());
    let (report, written) = h.apply_written(plan(vec![create("c-1")]), false).await;
    assert_eq!(
        report,
        WriteReport {
            mirrors: 1,
            created: 1,
            ..Default::default()
        }
    );
    // The mirror as the status write returned it (the version a settled plan expects).
    let [(id, Some(m))] = written.as_slice() else {
        panic!("{written:?}")
    };
    assert_eq!((id.as_str(), m.name.as_str()), ("c-1", "m-c-1"));
    assert!(m.resource_version.is_some() && m.status.is_some(), "{m:?}");
    assert_eq!(
        h.cache.current(NS, OWNER_UID)["c-1"].resource_version,
        m.resource_version,
        "what the overlay shows until the watch does"
    );

    let seen = h.take();
    let (writes, events): (Vec<_>, Vec<_>) = seen.into_iter().partition(|r| !r.is_event());
    assert_eq!(writes.len(), 2, "{writes:#?}");
    // First the metadata and spec, through the object itself...
    let meta = &writes[0];
    assert!(meta.on(Method::PATCH, "m-c-1", ""), "{meta:?}");
    assert_ssa(meta, "m-c-1");
    let b = &meta.body;
    assert_eq!(b["spec"], json!(owner().spec("c-1")));
    assert_eq!(b["metadata"]["labels"], json!(owner().labels("c-1")));
    assert_eq!(b["metadata"]["annotations"][ANNOTATION_CLUSTER_ID], "c-1");
    assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], OWNER_UID);
    assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
    assert!(
        b.get("status").is_none(),
        "the object write sets no status: {b}"
    );
    // ...then the status, through the status subresource, with nothing else.
    let st = &writes[1];
    assert!(st.on(Method::PATCH, "m-c-1", "/status"), "{st:?}");
    assert_ssa(st, "m-c-1");
    assert_eq!(st.body["status"]["state"], "Running");
    assert!(st.body.get("spec").is_none(), "{}", st.body);

    // One Event, on the new mirror.
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].method, Method::POST);
    assert_eq!(events[0].body["reason"], "Created");
    assert_eq!(events[0].body["regarding"]["name"], "m-c-1");
    assert_eq!(events[0].body["type"], "Normal");

    assert_eq!((h.writes("apply"), h.writes("apply-status")), (1, 1));
    // The operator's own view has the creation before the watch reports it.
    let current = h.cache.current(NS, OWNER_UID);
    assert_eq!(
        current["c-1"].status,
        Some(SeenStatus::of(&running("Running")))
    );
}

#[tokio::test]
async fn a_status_change_is_one_status_apply() {
    let m = mirror("c-1", "Starting");
    let h = Harness::new(vec![m.clone()], accept_all());
    let report = h
        .apply(plan(vec![change_state(&m, "Running")]), false)
        .await;
    assert_eq!((report.created, report.failed), (0, 0));
    let seen = h.take();
    let writes: Vec<_> = seen.iter().filter(|r| !r.is_event()).collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(writes[0].on(Method::PATCH, "m-c-1", "/status"));
    assert_ssa(writes[0], "m-c-1");
    let ev: Vec<_> = seen.iter().filter(|r| r.is_event()).collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].body["reason"], "StateChanged");
    assert_eq!(ev[0].body["note"], "state changed from Starting to Running");
}

#[tokio::test]
async fn a_write_refused_by_admission_is_a_refusal_with_the_servers_message() {
    let message = "admission webhook \"policy.example.com\" denied the request:\nno mirrors here";
    let h = Harness::new(
        vec![],
        refuse_when(|r| !r.is_event(), status(403, "Forbidden", message, None)),
    );
    // After an earlier refusal the pass starts with a single probe write.
    let actions = vec![create("c-1"), create("c-2"), create("c-3")];
    let report = h.apply(plan(actions), true).await;

    let seen = h.take();
    assert_eq!(seen.len(), 1, "one probe, then nothing: {seen:#?}");
    assert!(seen[0].on(Method::PATCH, "m-c-1", ""));
    let first = report.first.clone().expect("a refusal");
    assert_eq!(first.refusal, WriteRefusal::Forbidden);
    assert_eq!(
        first.message,
        "EmrRayCluster m-c-1: admission webhook \"policy.example.com\" denied the request: no \
         mirrors here"
    );
    assert_eq!(first.retry_after, None);
    assert_eq!(
        report,
        WriteReport {
            mirrors: 3,
            created: 0,
            deleted: 0,
            failed: 3,
            first: Some(first),
            refused: HashSet::from(["m-c-1".to_string()]),
            skipped: HashSet::from(["m-c-2".to_string(), "m-c-3".to_string()]),
        }
    );
    assert_eq!(h.refusals(WriteRefusal::Forbidden), 1);
    assert_eq!(h.writes("apply"), 0);
    assert!(h.cache.current(NS, OWNER_UID).is_empty());
}

/// Once a write of the pass was accepted, a refusal concerns its own object (an admission
/// policy on some mirrors): the pass goes on, so the others are written now rather than one
/// pass (and one backoff) per refused mirror later.
#[tokio::test]
async fn refusals_after_an_accepted_write_concern_single_mirrors() {
    let denied =
        |r: &Seen| !r.is_event() && (r.path.ends_with("/m-c-3") || r.path.ends_with("/m-c-7"));
    let h = Harness::new(
        vec![],
        refuse_when(denied, status(403, "Forbidden", "denied by policy", None)),
    );
    let actions = (1..=10).map(|i| create(&format!("c-{i}"))).collect();
    let report = h.apply(plan(actions), true).await;
    assert_eq!((report.created, report.failed), (8, 2), "{report:#?}");
    assert_eq!(
        report.refused,
        HashSet::from(["m-c-3".to_string(), "m-c-7".to_string()])
    );
    assert!(report.skipped.is_empty(), "{report:#?}");
    assert_eq!(h.refusals(WriteRefusal::Forbidden), 2);
}

/// ...but not without end: after an accepted write, a pass still stops once
/// `REFUSALS_AFTER_PROGRESS` writes were refused for good (a few more may be in flight).
#[tokio::test]
async fn a_pass_with_progress_still_stops_after_enough_refusals() {
    let h = Harness::new(
        vec![],
        refuse_when(
            |r| !r.is_event() && !r.path.ends_with("/m-c-1") && !r.path.ends_with("/m-c-1/status"),
            status(403, "Forbidden", "denied by policy", None),
        ),
    );
    let actions = (1..=60).map(|i| create(&format!("c-{i}"))).collect();
    let report = h.apply(plan(actions), true).await;
    assert_eq!(report.created, 1, "the probe");
    let refused = report.refused.len();
    assert!(
        (REFUSALS_AFTER_PROGRESS..REFUSALS_AFTER_PROGRESS + WRITE_CONCURRENCY).contains(&refused),
        "{refused} refused"
    );
    assert_eq!(report.skipped.len(), 59 - refused);
}

#[tokio::test]
async fn a_status_refused_as_invalid_keeps_the_last_data_and_says_so() {
    let m = mirror("c-1", "Starting");
    let message = "EmrRayCluster.emr.aliyun.io \"m-c-1\" is invalid: status.state: Invalid value";
    // The new state is refused; the condition saying so is accepted.
    let h = Harness::new(
        vec![m.clone()],
        refuse_when(
            |r| r.path.ends_with("/status") && r.body["status"]["state"] == "Running",
            status(422, "Invalid", message, None),
        ),
    );
    let report = h
        .apply(plan(vec![change_state(&m, "Running")]), false)
        .await;
    let first = report.first.clone().expect("a refusal");
    assert_eq!(first.refusal, WriteRefusal::Invalid);
    assert_eq!(first.message, format!("EmrRayCluster m-c-1: {message}"));
    assert_eq!(report.refused, HashSet::from(["m-c-1".to_string()]));

    let seen = h.take();
    assert!(
        seen.iter().all(|r| !r.is_event()),
        "no Event for a refused write"
    );
    assert_eq!(seen.len(), 3, "{seen:#?}");
    // The cache keeps a digest of the status: the mirror is read (by name) to keep its data.
    let read = &seen[1];
    assert_eq!(
        (read.method.clone(), read.path.as_str()),
        (Method::GET, MIRRORS)
    );
    assert_eq!(read.query["fieldSelector"], "metadata.name=m-c-1");
    let mark = &seen[2];
    assert!(mark.on(Method::PATCH, "m-c-1", "/status"));
    assert_ssa(mark, "m-c-1");
    // The last data, and a Synced condition with the API server's words.
    assert_eq!(mark.body["status"]["state"], "Starting");
    let conds = mark.body["status"]["conditions"].as_array().unwrap();
    let synced = conds.iter().find(|c| c["type"] == "Synced").unwrap();
    assert_eq!(synced["status"], "False");
    assert_eq!(synced["reason"], Reason::MirrorWriteFailed.as_str());
    let note = synced["message"].as_str().unwrap();
    assert!(
        note.contains("(Invalid)") && note.contains(message),
        "{note}"
    );
    assert_eq!(h.refusals(WriteRefusal::Invalid), 1);
    assert_eq!(h.writes("apply-status"), 1, "the condition");
}

#[tokio::test]
async fn a_conflict_is_transient_and_stops_nothing() {
    let h = Harness::new(
        vec![],
        refuse_when(
            |r| r.on(Method::PATCH, "m-c-2", ""),
            status(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified",
                None,
            ),
        ),
    );
    let actions = vec![create("c-1"), create("c-2"), create("c-3")];
    let report = h.apply(plan(actions), false).await;
    let first = report.first.clone().expect("a refusal");
    assert_eq!(first.refusal, WriteRefusal::Conflict);
    assert!(!first.refusal.is_permanent());
    assert_eq!((report.created, report.failed), (2, 1));
    assert_eq!(report.refused, HashSet::from(["m-c-2".to_string()]));
    assert!(report.skipped.is_empty());
    let seen = h.take();
    for name in ["m-c-1", "m-c-3"] {
        assert!(seen.iter().any(|r| r.on(Method::PATCH, name, "/status")));
    }
    assert!(!seen.iter().any(|r| r.on(Method::PATCH, "m-c-2", "/status")));
    assert_eq!(h.refusals(WriteRefusal::Conflict), 1);
}

#[tokio::test]
async fn throttling_and_server_errors_are_transient_and_retry_after_is_kept() {
    let h = Harness::new(
        vec![],
        Box::new(|r: &Seen| {
            if r.on(Method::PATCH, "m-c-1", "") {
                Some((
                    429,
                    status(429, "TooManyRequests", "too many requests", Some(7)),
                ))
            } else if r.on(Method::PATCH, "m-c-2", "") {
                Some((
                    503,
                    status(503, "ServiceUnavailable", "etcd unavailable", None),
                ))
            } else {
                None
            }
        }),
    );
    let actions = vec![create("c-1"), create("c-2"), create("c-3")];
    let report = h.apply(plan(actions), false).await;
    assert_eq!((report.created, report.failed), (1, 2));
    assert!(report.skipped.is_empty(), "transient refusals stop nothing");
    assert_eq!(
        report.refused,
        HashSet::from(["m-c-1".to_string(), "m-c-2".to_string()])
    );
    assert_eq!(
        (
            h.refusals(WriteRefusal::Throttled),
            h.refusals(WriteRefusal::ServerError)
        ),
        (1, 1)
    );
    let first = report.first.expect("a refusal");
    match first.refusal {
        WriteRefusal::Throttled => assert_eq!(first.retry_after, Some(Duration::from_secs(7))),
        WriteRefusal::ServerError => assert_eq!(first.retry_after, None),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_refusal_that_needs_a_person_is_the_one_reported() {
    let h = Harness::new(
        vec![],
        Box::new(|r: &Seen| {
            if r.on(Method::PATCH, "m-c-1", "") {
                Some((429, status(429, "TooManyRequests", "slow down", Some(1))))
            } else if r.on(Method::PATCH, "m-c-2", "") {
                Some((403, status(403, "Forbidden", "RBAC: no", None)))
            } else {
                None
            }
        }),
    );
    let report = h
        .apply(plan(vec![create("c-1"), create("c-2")]), false)
        .await;
    let first = report.first.clone().expect("a refusal");
    assert_eq!(first.refusal, WriteRefusal::Forbidden, "{report:?}");
    assert_eq!(first.message, "EmrRayCluster m-c-2: RBAC: no");
    assert_eq!(report.failed, 2);
}

#[tokio::test]
async fn deletes_go_in_the_background_and_a_mirror_already_gone_is_no_refusal() {
    let gone = mirror("c-1", "Stopped");
    let here = mirror("c-2", "Stopped");
    // The API server has only the second one: the first was deleted behind the watch's back.
    let h = Harness::with(
        vec![here.clone()],
        vec![gone.clone(), here.clone()],
        accept_all(),
    );
    let (report, mut written) = h
        .apply_written(plan(vec![delete(&gone), delete(&here)]), false)
        .await;
    assert_eq!((report.deleted, report.failed), (1, 0), "{report:?}");
    written.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        written,
        vec![("c-1".to_string(), None), ("c-2".to_string(), None)],
        "both are gone"
    );
    assert_eq!(report.first, None);
    let seen = h.take();
    let deletes: Vec<_> = seen.iter().filter(|r| r.method == Method::DELETE).collect();
    assert_eq!(deletes.len(), 2);
    for d in deletes {
        assert_eq!(d.body["propagationPolicy"], "Background", "{d:?}");
    }
    assert_eq!(h.writes("delete"), 1);
    let ev: Vec<_> = seen.iter().filter(|r| r.is_event()).collect();
    assert_eq!(ev.len(), 1, "only the actual delete is announced");
    assert_eq!(ev[0].body["reason"], "MirrorDeleted");
    assert!(
        h.store.get(NS, "m-c-2").is_some(),
        "the watch has not told yet"
    );
    assert!(!h.cache.current(NS, OWNER_UID).contains_key("c-2"));
}

/// The workspace's write trouble across passes, as `write_mirrors` keeps it: a backoff that
/// honours `Retry-After`, a probe write after a refusal, refused mirrors remembered until they
/// are written, and nothing left once every write went through.
#[tokio::test]
async fn write_trouble_backs_off_probes_and_clears() {
    let cap = Duration::from_secs(300);
    let pass = Arc::new(Mutex::new(1));
    let p = pass.clone();
    let h = Harness::new(
        vec![],
        Box::new(move |r: &Seen| match *p.lock().unwrap() {
            1 if r.on(Method::PATCH, "m-c-1", "") => {
                Some((429, status(429, "TooManyRequests", "slow down", Some(60))))
            }
            2 if !r.is_event() => Some((403, status(403, "Forbidden", "denied", None))),
            _ => None,
        }),
    );
    // Pass 1: throttled; the backoff is the API server's Retry-After (over the 5 s first step).
    let at = Instant::now();
    let report = h
        .apply(plan(vec![create("c-1"), create("c-2")]), false)
        .await;
    assert_eq!(report.created, 1);
    let t1 = next_write_trouble(None, report, ("t1", at), cap, 0.1).expect("write trouble");
    assert_eq!(t1.refusal, WriteRefusal::Throttled);
    assert_eq!((t1.consecutive, t1.since.as_str(), t1.failed), (1, "t1", 1));
    assert_eq!(t1.refused, HashSet::from(["m-c-1".to_string()]));
    // 60 s, lengthened by the jitter drawn (10 % here).
    assert_eq!(t1.retry_at, at + Duration::from_secs(66));

    // Pass 2: with trouble on record the pass probes; the probe is refused for good, so nothing
    // else is tried; the refusal changed, so `since` starts again.
    *pass.lock().unwrap() = 2;
    h.take();
    // (The plan puts the mirrors refused last time last.)
    let report = h
        .apply(plan(vec![create("c-3"), create("c-1")]), true)
        .await;
    let writes = h.take().into_iter().filter(|r| !r.is_event()).count();
    assert_eq!(writes, 1, "one probe write");
    let t2 = next_write_trouble(Some(t1), report, ("t2", at), cap, 0.0).expect("write trouble");
    assert_eq!(t2.refusal, WriteRefusal::Forbidden);
    assert_eq!((t2.consecutive, t2.since.as_str(), t2.failed), (2, "t2", 2));
    assert_eq!(t2.message, "EmrRayCluster m-c-3: denied");
    // Refused now, and refused before and not tried now: both still go last next time.
    assert_eq!(
        t2.refused,
        HashSet::from(["m-c-1".to_string(), "m-c-3".to_string()])
    );
    assert_eq!(t2.retry_at, at + Duration::from_secs(10), "the second step");

    // Pass 3: accepted; the trouble is over.
    *pass.lock().unwrap() = 3;
    let report = h
        .apply(plan(vec![create("c-3"), create("c-1")]), true)
        .await;
    assert_eq!((report.created, report.failed), (2, 0));
    assert!(next_write_trouble(Some(t2), report, ("t3", at), cap, 0.0).is_none());
}

#[tokio::test]
async fn a_creation_that_finds_its_object_takes_it_over_without_a_status_write() {
    // The API server has the mirror (labelled for another shard, say); this replica's watch has
    // not shown it, so the plan creates it.
    let h = Harness::with(vec![mirror("c-1", "Running")], vec![], accept_all());
    let report = h.apply(plan(vec![create("c-1")]), false).await;
    assert_eq!((report.created, report.failed), (0, 0), "{report:?}");
    let seen = h.take();
    assert_eq!(seen.len(), 1, "the object write only: {seen:#?}");
    assert!(seen[0].on(Method::PATCH, "m-c-1", ""));
    assert_ssa(&seen[0], "m-c-1");
    assert_eq!((h.writes("apply"), h.writes("apply-status")), (1, 0));
}

#[tokio::test]
async fn a_takeover_keeps_the_transition_times_of_conditions_that_did_not_change() {
    // The API server has the mirror, Ready since t1 (written by a write whose answer was lost);
    // the plan, not knowing it, says Ready since t2. Nothing changed: no status write, and the
    // object keeps t1.
    let conditions = |t: i64, ready: bool| {
        let mut set = ConditionSet::new(&[], Some(1), Time::test(t));
        set.set(ConditionType::Ready, ready, Reason::Synced, "ok".into());
        set.build()
    };
    let ready = |t: i64| EmrRayClusterStatus {
        conditions: conditions(t, true),
        ..running("Running")
    };
    let mut found = mirror("c-1", "Running");
    found.status = Some(ready(1));
    let h = Harness::with(vec![found], vec![], accept_all());
    let mut action = create("c-1");
    action.write = Write::Apply(ready(2));
    let report = h.apply(plan(vec![action]), false).await;
    assert_eq!((report.created, report.failed), (0, 0), "{report:?}");
    assert_eq!((h.writes("apply"), h.writes("apply-status")), (1, 0));

    // A condition whose status did change takes the plan's time.
    let mut found = mirror("c-2", "Running");
    found.status = Some(EmrRayClusterStatus {
        conditions: conditions(1, false),
        ..running("Running")
    });
    let h = Harness::with(vec![found], vec![], accept_all());
    let mut action = create("c-2");
    action.write = Write::Apply(ready(2));
    h.apply(plan(vec![action]), false).await;
    let status = h
        .take()
        .into_iter()
        .find(|s| s.on(Method::PATCH, "m-c-2", "/status"))
        .expect("a status write");
    assert_eq!(
        status.body["status"]["conditions"][0]["lastTransitionTime"],
        json!(Time::test(2).to_string())
    );
}
