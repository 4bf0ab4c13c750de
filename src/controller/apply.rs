//! Carries out a [`Plan`]: server-side applies and deletes, the Events they announce, and the
//! write metrics. Decides nothing beyond how to react to a refused write (and whether a
//! mirror the plan meant to create, found to exist, already has the status to write):
//!
//! * a refusal that needs a person (forbidden, invalid, too large) stops the rest of the pass —
//!   one refused write is enough to know; the next pass comes after the workspace's backoff and
//!   starts with a single probe write. Once a write of the pass was accepted, refusals concern
//!   single objects (an admission policy on some of them): the pass goes on past up to
//!   [`REFUSALS_AFTER_PROGRESS`] of them, so the others are written now, not one pass per
//!   refused mirror later;
//! * every write waits for the operator-wide write budget ([`WriteLimiter`]);
//! * a mirror whose status the API server refuses as invalid or too large keeps its last data and
//!   says so in its own `Synced` condition, when that small write is accepted.
//!
//! (Over 500 lines: one place for every kind of mirror write and its Event, plus the refusal
//! handling; about a sixth of it is unit tests.)

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::cache::CachedMirror;
use super::cache::MirrorCache;
use super::mirror::truncated;
use super::plan::{Action, MirrorEvent, Owner, Plan, Write};
use crate::api::conditions::{ConditionSet, ConditionType, keep_transition_times};
use crate::api::{
    ANNOTATION_CLUSTER_ID, EmrRayCluster, EmrRayClusterStatus, FIELD_MANAGER, Reason, WriteRefusal,
};
use crate::api::{AsReason, EventReason};
use crate::emr::ClusterState;
use crate::metrics::{KubeResource, Metrics, WriteOperation};
use crate::time::Time;

/// Concurrent Kubernetes writes per workspace sync.
pub const WRITE_CONCURRENCY: usize = 16;
/// Longest `Retry-After` of the API server honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The operator-wide bounds on Kubernetes writes: requests per second, and requests in flight
/// (each in-flight request holds a connection to the API server and its buffers: the bound
/// keeps the operator's memory flat however many workspaces sync at once).
#[derive(Clone)]
pub struct WriteLimiter {
    rate: Arc<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
}

/// Most write requests in flight the operator allows (the flag is capped here).
pub const MAX_WRITES_IN_FLIGHT: usize = 10_000;

/// Held while one write request is in flight.
pub type WritePermit = OwnedSemaphorePermit;

impl WriteLimiter {
    /// `per_second` writes per second with bursts of `burst`, at most `in_flight` at a time (each
    /// at least 1).
    pub fn new(per_second: u32, burst: u32, in_flight: usize) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        WriteLimiter {
            rate: Arc::new(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            )),
            in_flight: Arc::new(Semaphore::new(in_flight.clamp(1, MAX_WRITES_IN_FLIGHT))),
        }
    }

    /// Waits for a slot and for the rate; hold the permit until the request has returned.
    pub async fn wait(&self) -> WritePermit {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the write semaphore is never closed");
        self.rate.until_ready().await;
        permit
    }
}

/// The server-side-apply body of `K` named `name` with `fields` (metadata besides the name,
/// spec, or status) — the one place such bodies are built.
pub fn ssa_body<K: Resource<DynamicType = ()>>(
    name: &str,
    fields: serde_json::Value,
) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
    });
    if let (Some(b), serde_json::Value::Object(f)) = (body.as_object_mut(), fields) {
        for (k, v) in f {
            match (k.as_str(), v) {
                ("metadata", serde_json::Value::Object(m)) => {
                    if let Some(meta) = b.get_mut("metadata").and_then(|v| v.as_object_mut()) {
                        meta.extend(m);
                    }
                }
                (_, v) => {
                    b.insert(k, v);
                }
            }
        }
    }
    body
}

/// Which part of an object a server-side apply writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself (metadata and spec).
    Main,
    /// The status subresource.
    Status,
}

/// Server-side applies `fields` of `K` to the object or its status subresource.
pub async fn apply_ssa<K>(
    api: &Api<K>,
    name: &str,
    fields: serde_json::Value,
    to: Subresource,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let body = ssa_body::<K>(name, fields);
    match to {
        Subresource::Status => api.patch_status(name, &pp, &Patch::Apply(&body)).await,
        Subresource::Main => api.patch(name, &pp, &Patch::Apply(&body)).await,
    }
}

/// A write the API server refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub refusal: WriteRefusal,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Refused {
    pub fn from_error(e: &kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Refused {
                refusal: WriteRefusal::classify(s.code, &s.reason, &s.message),
                message: crate::emr::error::clean_text(&without_identity(&s.message), 512),
                retry_after: s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(u64::from(s)).min(MAX_RETRY_AFTER)),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Refused {
                refusal: WriteRefusal::Unavailable,
                message: crate::emr::error::clean_text(&e.to_string(), 512),
                retry_after: None,
            },
            other => Refused {
                refusal: WriteRefusal::Other,
                message: crate::emr::error::clean_text(&other.to_string(), 512),
                retry_after: None,
            },
        }
    }
}

/// Who the operator is, in the API server's refusal: RBAC's `User "…"` and any ServiceAccount
/// name a policy's or webhook's text quotes. A refusal reaches the tenant's workspace status,
/// and the operator's identity belongs to the cluster admins (they have it in the
/// operator's Deployment): the tenant learns what was refused, not who the operator is.
fn without_identity(message: &str) -> String {
    const OPERATOR: &str = "<the operator>";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let user = rest.find("User \"").map(|i| (i, i + "User \"".len()));
        let sa = rest.find("system:serviceaccount:").map(|i| (i, i));
        // The first of the two (a `User "` starts before the name it quotes).
        let Some((_, from)) = [user, sa].into_iter().flatten().min() else {
            break;
        };
        out.push_str(&rest[..from]);
        out.push_str(OPERATOR);
        let tail = &rest[from..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | ']'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// What one action came to.
#[derive(Debug)]
enum Outcome {
    /// Deleted already (the cluster ID of the action).
    Unchanged(String),
    /// The mirror as our last write of it returned it.
    Created(Arc<CachedMirror>),
    Updated(Arc<CachedMirror>),
    /// The cluster ID of the action.
    Deleted(String),
    Refused {
        name: String,
        refused: Refused,
    },
    /// Not attempted: an earlier refusal in this pass needs a person.
    Skipped {
        name: String,
    },
}

/// What a write pass came to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteReport {
    /// Mirrors the workspace should have.
    pub mirrors: usize,
    pub created: usize,
    pub deleted: usize,
    /// Actions refused or not attempted.
    pub failed: usize,
    /// The first refusal (permanent ones first), with the mirror it concerns.
    pub first: Option<Refused>,
    /// Mirrors whose write was refused.
    pub refused: HashSet<String>,
    /// Mirrors not attempted after a refusal.
    pub skipped: HashSet<String>,
}

/// By cluster ID, each mirror a write pass wrote as its last write returned it (`None`:
/// deleted): what the mirrors are after the pass, as far as this pass knows.
pub type Written = Vec<(String, Option<Arc<CachedMirror>>)>;

/// What [`apply_plan`] writes with.
pub struct Writer<'a> {
    pub api: Api<EmrRayCluster>,
    pub owner: &'a Owner,
    pub workspace: ObjectReference,
    pub cache: &'a MirrorCache,
    pub recorder: &'a Recorder,
    pub metrics: &'a Metrics,
    pub limiter: &'a WriteLimiter,
    pub now: &'a Time,
}

/// Refusals that need a person a pass goes on past once one of its writes was accepted.
pub const REFUSALS_AFTER_PROGRESS: usize = 8;

/// Whether a pass goes on: stopped by a refusal that needs a person, unless a write of the pass
/// was accepted (then after [`REFUSALS_AFTER_PROGRESS`] of them).
#[derive(Default)]
struct Gate {
    stop: AtomicBool,
    accepted: AtomicBool,
    refused: AtomicUsize,
}

impl Gate {
    fn accepted(&self) {
        self.accepted.store(true, Ordering::SeqCst);
    }

    /// A refusal that needs a person.
    fn refused_for_good(&self) {
        let n = self.refused.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.accepted.load(Ordering::SeqCst) || n >= REFUSALS_AFTER_PROGRESS {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Performs the plan's actions. `probe`: the previous pass was refused, so one write goes alone
/// first and the rest only if it is not refused for good. Returns what the pass came to, and
/// the mirrors it wrote.
pub async fn apply_plan(w: &Writer<'_>, plan: Plan, probe: bool) -> (WriteReport, Written) {
    let gate = Gate::default();
    let summarize = plan.summarize_events;
    let mut actions = plan.actions.into_iter();
    let mut outcomes = Vec::new();
    if probe && let Some(first) = actions.next() {
        outcomes.push(run_action(w, first, &gate, summarize).await);
    }
    let rest: Vec<Outcome> = futures::stream::iter(actions)
        .map(|a| run_action(w, a, &gate, summarize))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    outcomes.extend(rest);

    let mut report = WriteReport {
        mirrors: plan.mirrors,
        ..Default::default()
    };
    let mut written = Written::new();
    for o in outcomes {
        match o {
            Outcome::Unchanged(id) => written.push((id, None)),
            Outcome::Updated(m) => written.push((m.cluster_id.clone(), Some(m))),
            Outcome::Created(m) => {
                report.created += 1;
                written.push((m.cluster_id.clone(), Some(m)));
            }
            Outcome::Deleted(id) => {
                report.deleted += 1;
                written.push((id, None));
            }
            Outcome::Refused { name, refused } => {
                report.failed += 1;
                report.refused.insert(name);
                let better = report
                    .first
                    .as_ref()
                    .is_none_or(|f| refused.refusal.is_permanent() && !f.refusal.is_permanent());
                if better {
                    report.first = Some(refused);
                }
            }
            Outcome::Skipped { name } => {
                report.failed += 1;
                report.skipped.insert(name);
            }
        }
    }
    if plan.summarize_events && report.created + report.deleted > 0 {
        publish(
            w.recorder,
            &w.workspace,
            EventType::Normal,
            EventReason::MirrorsSynced,
            format!(
                "created {} and deleted {} EmrRayCluster mirrors",
                report.created, report.deleted
            ),
        )
        .await;
    }
    if report.created + report.deleted > 0 {
        info!(
            workspace = %w.workspace.name.as_deref().unwrap_or_default(),
            created = report.created, deleted = report.deleted, "mirrors updated"
        );
    }
    (report, written)
}

async fn run_action(w: &Writer<'_>, a: Action, gate: &Gate, summarize: bool) -> Outcome {
    if gate.stopped() {
        return Outcome::Skipped { name: a.name };
    }
    let name = a.name.clone();
    match write_action(w, a, summarize).await {
        Ok(o) => {
            if matches!(
                o,
                Outcome::Created(_) | Outcome::Updated(_) | Outcome::Deleted(_)
            ) {
                gate.accepted();
            }
            o
        }
        Err(refused) => {
            w.metrics
                .count_refusal(KubeResource::EmrRayClusters, refused.refusal);
            if refused.refusal.is_permanent() {
                gate.refused_for_good();
            }
            warn!(
                mirror = %name, refusal = %refused.refusal, message = %refused.message,
                "the API server refused a mirror write"
            );
            Outcome::Refused {
                refused: Refused {
                    message: format!("EmrRayCluster {name}: {}", refused.message),
                    ..refused
                },
                name,
            }
        }
    }
}

/// One action's writes; `Err` when the API server refused one.
async fn write_action(w: &Writer<'_>, mut a: Action, summarize: bool) -> Result<Outcome, Refused> {
    let ns = &w.owner.namespace;
    let refused = |e: kube::Error| Refused::from_error(&e);
    // What the store had before our writes: a mirror taken over from another shard was never in
    // this shard's store, so our write counts as a creation there until the watch shows it.
    let before = a
        .prev
        .clone()
        .filter(|p| w.cache.get(ns, &p.name).is_some());
    let before = before.as_deref();
    debug!(
        mirror = %a.name,
        write = a.write.kind(),
        planned_at = %w.now,
        planned_on = a.prev.as_ref().and_then(|p| p.resource_version.as_deref()),
        in_store = before.is_some(),
        "writing a mirror"
    );
    let status = match a.write {
        Write::Delete => {
            let _permit = w.limiter.wait().await;
            match w.api.delete(&a.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Ok(Outcome::Unchanged(a.cluster_id));
                }
                Err(e) => return Err(refused(e)),
            }
            w.metrics
                .count_write(KubeResource::EmrRayClusters, WriteOperation::Delete);
            w.cache.record_write(ns, &a.name, before, None);
            if let Some(ev) = &a.event {
                announce(w, &a.name, &a.cluster_id, None, ev, summarize).await;
            }
            return Ok(Outcome::Deleted(a.cluster_id));
        }
        Write::Metadata => {
            let res = apply_metadata(w, (&a.name, &a.cluster_id), before).await?;
            return Ok(Outcome::Updated(Arc::new(CachedMirror::of(&res))));
        }
        Write::Apply(mut status) => {
            let res = apply_metadata(w, (&a.name, &a.cluster_id), before).await?;
            if a.prev.is_none()
                && let Some(found) = &res.status
            {
                // It existed already, unseen by this replica (labelled for another shard, or
                // written by a write whose answer was lost): taken over, not created; its
                // status is written only if it differs (what the plan could not know), and its
                // unchanged conditions keep their transition times.
                keep_transition_times(&mut status.conditions, &found.conditions);
                if res.status.as_ref() == Some(&status) {
                    return Ok(Outcome::Updated(Arc::new(CachedMirror::of(&res))));
                }
                a.event = takeover_event(a.event.take(), res.status.as_ref());
                a.prev = Some(Arc::new(CachedMirror::of(&res)));
            }
            status
        }
        Write::Status(status) => status,
    };
    let permit = w.limiter.wait().await;
    let fields = json!({ "status": &status });
    let res = apply_ssa(&w.api, &a.name, fields, Subresource::Status).await;
    // Released before `mark_unwritable` takes a permit of its own.
    drop(permit);
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            let r = refused(e);
            if let Some(prev) = &a.prev {
                mark_unwritable(w, prev, &r).await;
            }
            return Err(r);
        }
    };
    w.metrics
        .count_write(KubeResource::EmrRayClusters, WriteOperation::ApplyStatus);
    // Until the watch delivers this status, a reconcile must not take the store's older object
    // for the current one and write the status again.
    let record = w.cache.record_write(ns, &a.name, before, Some(&res));
    if let Some(ev) = &a.event {
        let r = res.object_ref(&());
        announce(w, &a.name, &a.cluster_id, Some(&r), ev, summarize).await;
    }
    let record = record.unwrap_or_else(|| Arc::new(CachedMirror::of(&res)));
    Ok(if a.prev.is_none() {
        Outcome::Created(record)
    } else {
        Outcome::Updated(record)
    })
}

/// Server-side apply of a mirror's metadata (labels, the cluster-ID annotation, the owner) and
/// spec; the object the API server returned.
async fn apply_metadata(
    w: &Writer<'_>,
    (name, cluster_id): (&str, &str),
    before: Option<&CachedMirror>,
) -> Result<EmrRayCluster, Refused> {
    let fields = json!({
        "metadata": {
            "labels": w.owner.labels(cluster_id),
            "annotations": { ANNOTATION_CLUSTER_ID: cluster_id },
            "ownerReferences": [w.owner.reference()],
        },
        "spec": w.owner.spec(cluster_id),
    });
    let _permit = w.limiter.wait().await;
    let res = apply_ssa(&w.api, name, fields, Subresource::Main)
        .await
        .map_err(|e| Refused::from_error(&e))?;
    w.metrics
        .count_write(KubeResource::EmrRayClusters, WriteOperation::Apply);
    w.cache
        .record_write(&w.owner.namespace, name, before, Some(&res));
    Ok(res)
}

/// The Event of a planned creation whose object turned out to exist: a state change, if any.
fn takeover_event(
    planned: Option<MirrorEvent>,
    found: Option<&EmrRayClusterStatus>,
) -> Option<MirrorEvent> {
    match planned {
        Some(MirrorEvent::Created { state }) => {
            let from = found.and_then(|s| s.state.clone());
            (from != state).then_some(MirrorEvent::StateChanged {
                from,
                to: state,
                message: None,
            })
        }
        other => other,
    }
}

/// The mirror keeps its last data and says, in its `Synced` condition, that its status could
/// not be written (only for refusals of this object's content, and once).
async fn mark_unwritable(w: &Writer<'_>, prev: &CachedMirror, r: &Refused) {
    if !matches!(r.refusal, WriteRefusal::Invalid | WriteRefusal::TooLarge) {
        return;
    }
    // The cache keeps a digest of the status: the status itself is read (a LIST by name: the
    // operator may list mirrors, not get them; a consistent read, not the watch cache's).
    // Unread, the mirror is left as it is.
    let by_name = ListParams::default().fields(&format!("metadata.name={}", prev.name));
    let found = match w.api.list(&by_name).await {
        Ok(list) => list.items.into_iter().next(),
        Err(e) => {
            debug!(error = %e, "reading a mirror to mark it unwritable failed");
            return;
        }
    };
    let Some(found) = found else {
        return;
    };
    let mut status: EmrRayClusterStatus = found.status.unwrap_or_default();
    let already = status.conditions.iter().any(|c| {
        c.type_ == ConditionType::Synced && c.reason == Reason::MirrorWriteFailed.as_str()
    });
    if already {
        return;
    }
    let message = format!(
        "the API server refused this mirror's new status ({}): {}",
        r.refusal, r.message
    );
    let mut conds: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != ConditionType::Synced)
        .cloned()
        .collect();
    let mut synced = ConditionSet::new(&status.conditions, prev.generation, *w.now);
    synced.set(
        ConditionType::Synced,
        false,
        Reason::MirrorWriteFailed,
        message,
    );
    conds.extend(synced.build());
    status.conditions = conds;
    let _permit = w.limiter.wait().await;
    match apply_ssa(
        &w.api,
        &prev.name,
        json!({ "status": status }),
        Subresource::Status,
    )
    .await
    {
        Ok(res) => {
            w.metrics
                .count_write(KubeResource::EmrRayClusters, WriteOperation::ApplyStatus);
            w.cache
                .record_write(&w.owner.namespace, &prev.name, Some(prev), Some(&res));
        }
        Err(e) => debug!(error = %e, "marking a mirror as unwritable failed too"),
    }
}

/// Publishes the Event of a successful mirror write.
async fn announce(
    w: &Writer<'_>,
    name: &str,
    cluster_id: &str,
    mirror: Option<&ObjectReference>,
    ev: &MirrorEvent,
    summarize: bool,
) {
    let target = mirror.unwrap_or(&w.workspace);
    let (kind, reason, note) = match ev {
        MirrorEvent::Created { .. } | MirrorEvent::Deleted if summarize => return,
        MirrorEvent::Created { state } => (
            EventType::Normal,
            EventReason::Created,
            format!(
                "mirroring remote Ray cluster {cluster_id} ({})",
                state.as_deref().unwrap_or("state unknown")
            ),
        ),
        MirrorEvent::Deleted => (
            EventType::Normal,
            EventReason::MirrorDeleted,
            format!(
                "deleted EmrRayCluster {name}: remote cluster {cluster_id} is no longer listed"
            ),
        ),
        MirrorEvent::StateChanged { from, to, message } => {
            let to = to.as_deref().unwrap_or("Unknown");
            let mut note = format!(
                "state changed from {} to {to}",
                from.as_deref().unwrap_or("Unknown")
            );
            let error = ClusterState::from(to) == ClusterState::Error;
            if error && let Some(m) = message.as_deref().filter(|m| !m.is_empty()) {
                note.push_str(": ");
                note.push_str(m);
            }
            let kind = if error {
                EventType::Warning
            } else {
                EventType::Normal
            };
            (kind, EventReason::StateChanged, note)
        }
        MirrorEvent::Gone => (
            EventType::Warning,
            EventReason::RemoteClusterGone,
            "the remote Ray cluster is no longer listed; kept because goneClusterPolicy is Keep"
                .to_string(),
        ),
    };
    publish(w.recorder, target, kind, reason, note).await;
}

/// Longest Event note the API server accepts (events.k8s.io: 1 KiB).
const MAX_EVENT_NOTE: usize = 1024;

/// Publishes an Event (notes are capped; failures to publish are only logged).
pub async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: impl AsReason,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.as_reason().to_string(),
        note: Some(truncated(&note, MAX_EVENT_NOTE)),
        action: "Sync".to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, reference).await {
        debug!(error = %e, "publishing an event failed");
    }
}

#[cfg(test)]
mod write_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EmrWorkspace;

    #[test]
    fn ssa_bodies_carry_kind_name_and_fields() {
        let b = ssa_body::<EmrWorkspace>("ws", json!({"status": {"clusters": 1}}));
        assert_eq!(b["apiVersion"], "emr.aliyun.io/v1alpha1");
        assert_eq!(b["kind"], "EmrWorkspace");
        assert_eq!(b["metadata"]["name"], "ws");
        assert_eq!(b["status"]["clusters"], 1);
        let b =
            ssa_body::<EmrRayCluster>("m", json!({"metadata": {"labels": {"a": "b"}}, "spec": {}}));
        assert_eq!(b["metadata"]["name"], "m");
        assert_eq!(b["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn refusals_from_api_errors() {
        let status = |code: u16, reason: &str, retry: u32| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: "denied\nby policy".into(),
                details: Some(kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: retry,
                }),
                ..kube::core::Status::failure("x", reason)
            }))
        };
        let r = Refused::from_error(&status(403, "Forbidden", 0));
        assert_eq!(r.refusal, WriteRefusal::Forbidden);
        assert_eq!(r.message, "denied by policy");
        let r = Refused::from_error(&status(429, "TooManyRequests", 7));
        assert_eq!(r.refusal, WriteRefusal::Throttled);
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let r = Refused::from_error(&status(429, "TooManyRequests", u32::MAX));
        assert_eq!(r.retry_after, Some(MAX_RETRY_AFTER));
    }

    /// Issue 18 item 10: a refusal reaches the tenant's status without the operator's identity.
    #[test]
    fn refusals_do_not_name_the_operator() {
        for (raw, shown) in [
            (
                r#"emrrayclusters.emr.aliyun.io "ray-a" is forbidden: User "system:serviceaccount:emr-system:emr-ray-operator" cannot patch resource "emrrayclusters" in API group "emr.aliyun.io" in the namespace "t""#,
                r#"emrrayclusters.emr.aliyun.io "ray-a" is forbidden: User "<the operator>" cannot patch resource "emrrayclusters" in API group "emr.aliyun.io" in the namespace "t""#,
            ),
            (
                r#"admission webhook "x" denied the request: system:serviceaccount:emr-system:op may not, (system:serviceaccount:a:b)"#,
                r#"admission webhook "x" denied the request: <the operator> may not, (<the operator>)"#,
            ),
            (
                r#"User "admin" cannot create"#,
                r#"User "<the operator>" cannot create"#,
            ),
            (r#"User "unterminated"#, r#"User "<the operator>"#),
            (
                "exceeded quota: q, requested: count/x=1",
                "exceeded quota: q, requested: count/x=1",
            ),
            ("", ""),
        ] {
            assert_eq!(without_identity(raw), shown, "{raw}");
        }
    }

    #[test]
    fn a_creation_that_found_its_object_is_no_creation() {
        let found = |state: &str| EmrRayClusterStatus {
            state: Some(state.into()),
            ..Default::default()
        };
        let created = |state: &str| {
            Some(MirrorEvent::Created {
                state: Some(state.into()),
            })
        };
        assert_eq!(
            takeover_event(created("Running"), Some(&found("Running"))),
            None
        );
        assert_eq!(
            takeover_event(created("Running"), Some(&found("Starting"))),
            Some(MirrorEvent::StateChanged {
                from: Some("Starting".into()),
                to: Some("Running".into()),
                message: None,
            })
        );
        assert_eq!(
            takeover_event(Some(MirrorEvent::Gone), None),
            Some(MirrorEvent::Gone)
        );
    }

    #[test]
    fn event_notes_fit_the_api_servers_limit() {
        let note = truncated(&"é".repeat(2000), MAX_EVENT_NOTE);
        assert!(note.len() <= MAX_EVENT_NOTE, "{}", note.len());
        assert!(note.ends_with(crate::controller::mirror::TRUNCATED));
        assert_eq!(truncated("abc", MAX_EVENT_NOTE), "abc");
    }
}
