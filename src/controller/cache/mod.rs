//! The mirrors as the operator keeps them between syncs: a compact record of each object the
//! mirror watch reports instead of the object itself ([`CachedMirror`], here), the watch-fed
//! store of those records ([`store`]), and the overlay of the operator's own writes on it
//! ([`overlay`]) through which reconciles read a workspace's mirrors.
//!
//! A decoded `EmrRayCluster` costs ≈4.5 KiB of heap (metadata maps, owner references, three
//! dozen optional strings of status); planning needs its name, version, generation, owner, a
//! digest of the metadata and spec the operator sets, and of the status only what
//! [`SeenStatus`] keeps (≈0.2 KiB): a digest of it, its state, and its conditions' transition
//! times. A plan that must keep a mirror's data as it is (the listing failed, the cluster is gone
//! or its instances could not be fetched) reads the workspace's mirrors from the API server
//! (`write::read_statuses`). The watch still decodes whole objects, one list page or event at a
//! time.
//!
//! # Locks
//!
//! Each lock has one owner, and none is held across an `.await`. Where two are held at once,
//! the order is always:
//!
//! 1. [`MirrorCache`]'s `written` (the overlay of our writes), then
//! 2. [`MirrorStore`]'s `objects` (read), then
//! 3. [`MirrorStore`]'s `deletes` (recent deletes).
//!
//! The watch task takes only 2 and 3 (in that order, 2 released first); `MirrorCache::current`
//! takes 1 and, under it, 2 and 3 one after the other. Every other lock of the cache
//! (`MirrorCache::by_owner`, `MirrorChanges::changed`/`scanned`) is taken alone. The
//! reconciler's own maps (see [`super::context`]) are never held while these are taken.

pub mod overlay;
pub mod store;

use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::LazyLock;

use kube::ResourceExt;

use crate::api::{
    ANNOTATION_CLUSTER_ID, Condition, ConditionStatus, ConditionType, EmrRayCluster,
    EmrRayClusterSpec, EmrRayClusterStatus, LABEL_CLUSTER_ID, LABEL_MANAGED_BY, LABEL_SHARD,
    LABEL_WORKSPACE, LABEL_WORKSPACE_ID,
};
use crate::time::Time;
pub use overlay::{MirrorCache, MirrorChanges, MirrorsByName};
pub use store::{DELETES_KEPT, MirrorStore};

/// The labels whose values the operator sets on every mirror (the shard label only in a shard).
const SHAPE_LABELS: [&str; 5] = [
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_ID,
    LABEL_CLUSTER_ID,
    LABEL_MANAGED_BY,
    LABEL_SHARD,
];

/// A digest of what the operator sets on a mirror besides its status and owner: the spec, the
/// values of its labels (absent ones included) and the cluster-ID annotation. Equal digests mean
/// the metadata needs no repair. Only ever compared within one process.
pub fn shape_digest<'a>(
    spec: &EmrRayClusterSpec,
    label: impl Fn(&str) -> Option<&'a str>,
    cluster_id_annotation: Option<&str>,
) -> u64 {
    let mut h = DefaultHasher::new();
    spec.workspace_ref.hash(&mut h);
    spec.workspace_id.hash(&mut h);
    spec.region_id.hash(&mut h);
    spec.cluster_id.hash(&mut h);
    for key in SHAPE_LABELS {
        label(key).hash(&mut h);
    }
    cluster_id_annotation.hash(&mut h);
    h.finish()
}

/// One mirror, as cached.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedMirror {
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    /// `spec.clusterId`.
    pub cluster_id: String,
    /// `spec.workspaceRef`.
    pub workspace_ref: String,
    /// UID of the controlling owner reference.
    pub controller_uid: Option<String>,
    /// [`shape_digest`] of the object.
    pub shape: u64,
    /// What planning reads of the status (`None`: the object has none).
    pub status: Option<SeenStatus>,
}

/// Keys of [`status_digest`]: random per process, so that no remote input can be made to
/// collide with another on purpose.
static STATUS_KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A digest of a mirror's status: equal digests, equal statuses (the JSON of one is the JSON of
/// the other). Only ever compared within one process.
pub fn status_digest(s: &EmrRayClusterStatus) -> u64 {
    /// Feeds the JSON to the hasher as it is written (nothing is buffered).
    struct Feed<H>(H);
    impl<H: Hasher> std::io::Write for Feed<H> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut feed = Feed(STATUS_KEYS.build_hasher());
    // The operator's own type always serializes; were it not to, the digest matches nothing
    // written and the status is written again.
    if serde_json::to_writer(&mut feed, s).is_err() {
        0xdead.hash(&mut feed.0);
    }
    feed.0.finish()
}

/// What the cache keeps of a mirror's status: enough to plan a sync whose listing was decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenStatus {
    /// [`status_digest`] of the whole status: whether a desired status is already shown.
    pub digest: u64,
    /// `state` and `gone`: the Events of a change.
    pub state: Option<String>,
    pub gone: bool,
    /// Whether it shows instances (a failed fetch keeps them: the plan then needs them).
    pub has_instances: bool,
    /// Each condition's type, status and transition time: what a new status's conditions keep.
    conditions: Box<[(ConditionType, ConditionStatus, Time)]>,
}

impl SeenStatus {
    pub fn of(s: &EmrRayClusterStatus) -> Self {
        SeenStatus {
            digest: status_digest(s),
            state: s.state.clone(),
            gone: s.gone,
            has_instances: !s.instances.is_empty(),
            conditions: s
                .conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status, c.last_transition_time))
                .collect(),
        }
    }

    /// The conditions as far as they are kept (type, status and transition time; no reason or
    /// message): what `conditions::condition` reads of previous conditions.
    pub fn conditions(&self) -> Vec<Condition> {
        self.conditions
            .iter()
            .map(|(type_, status, at)| Condition {
                type_: type_.clone(),
                status: *status,
                reason: String::new(),
                message: String::new(),
                last_transition_time: *at,
                observed_generation: None,
            })
            .collect()
    }
}

impl CachedMirror {
    pub fn of(m: &EmrRayCluster) -> Self {
        let labels = m.labels();
        CachedMirror {
            namespace: m.namespace().unwrap_or_default(),
            name: m.name_any(),
            resource_version: m.resource_version(),
            generation: m.metadata.generation,
            cluster_id: m.spec.cluster_id.clone(),
            workspace_ref: m.spec.workspace_ref.clone(),
            controller_uid: m
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            shape: shape_digest(
                &m.spec,
                |k| labels.get(k).map(String::as_str),
                m.annotations()
                    .get(ANNOTATION_CLUSTER_ID)
                    .map(String::as_str),
            ),
            status: m.status.as_ref().map(SeenStatus::of),
        }
    }

    /// Whether workspace `uid` controls this mirror.
    pub fn controlled_by(&self, uid: &str) -> bool {
        self.controller_uid.as_deref() == Some(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EmrRayClusterStatus, MANAGED_BY};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    pub(super) fn mirror(name: &str, rv: &str) -> EmrRayCluster {
        let mut m = EmrRayCluster::new(
            name,
            EmrRayClusterSpec {
                workspace_ref: "ws".into(),
                workspace_id: "w-1".into(),
                region_id: "cn-hangzhou".into(),
                cluster_id: format!("id-{name}"),
            },
        );
        m.metadata.namespace = Some("ns".into());
        m.metadata.resource_version = Some(rv.into());
        m.metadata.labels = Some([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())].into());
        m.metadata.owner_references = Some(vec![OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        m.status = Some(EmrRayClusterStatus {
            state: Some("Running".into()),
            display_name: Some("a cluster".into()),
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_record_keeps_what_planning_reads() {
        let m = mirror("a", "7");
        let c = CachedMirror::of(&m);
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("ns", "a"));
        assert_eq!(c.resource_version.as_deref(), Some("7"));
        assert_eq!(
            (c.cluster_id.as_str(), c.workspace_ref.as_str()),
            ("id-a", "ws")
        );
        assert!(c.controlled_by("u1") && !c.controlled_by("u2"));
        let seen = c.status.as_ref().unwrap();
        let status = m.status.as_ref().unwrap();
        assert_eq!(seen.digest, status_digest(status));
        assert_eq!(seen.state.as_deref(), Some("Running"));
        let mut other = status.clone();
        other.display_name = Some("another cluster".into());
        assert_ne!(
            status_digest(&other),
            seen.digest,
            "any field changes the digest"
        );

        // Any change to the spec, to one of the operator's labels (or a shard label appearing)
        // or to the annotation changes the shape; other labels do not.
        let shape = |f: &dyn Fn(&mut EmrRayCluster)| {
            let mut m = mirror("a", "7");
            f(&mut m);
            CachedMirror::of(&m).shape
        };
        let labels = |m: &mut EmrRayCluster| m.metadata.labels.get_or_insert_default().clone();
        assert_eq!(shape(&|_| {}), c.shape);
        assert_eq!(
            shape(&|m| {
                let mut l = labels(m);
                l.insert("team".into(), "x".into());
                m.metadata.labels = Some(l);
            }),
            c.shape
        );
        assert_ne!(shape(&|m| m.spec.region_id = "cn-beijing".into()), c.shape);
        assert_ne!(
            shape(&|m| {
                let mut l = labels(m);
                l.insert(LABEL_SHARD.into(), "a".into());
                m.metadata.labels = Some(l);
            }),
            c.shape
        );
        assert_ne!(shape(&|m| m.metadata.labels = None), c.shape);
        assert_ne!(
            shape(&|m| {
                m.metadata.annotations = Some([(ANNOTATION_CLUSTER_ID.into(), "x".into())].into())
            }),
            c.shape
        );
    }
}
