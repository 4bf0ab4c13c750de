//! The mirrors as the operator keeps them between syncs: a compact record of each object the
//! mirror watch reports instead of the object itself ([`CachedMirror`], here), the watch-fed
//! store of those records ([`store`]), and the overlay of the operator's own writes on it
//! ([`overlay`]) through which reconciles read a workspace's mirrors.
//!
//! A decoded `EmrRayCluster` costs ≈4.5 KiB of heap (metadata maps, owner references, three
//! dozen optional strings of status); planning needs its name, version, generation, owner, a
//! digest of the metadata and spec the operator sets, and the status — which is kept
//! [`Packed`] (≈0.7 KiB) and decoded only while a sync plans its mirrors.
//! The watch still decodes whole objects, one list page or event at a time.
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

use std::hash::{DefaultHasher, Hash, Hasher};

use kube::ResourceExt;

use super::packed::Packed;
use crate::api::{
    ANNOTATION_CLUSTER_ID, EmrRayCluster, EmrRayClusterSpec, EmrRayClusterStatus, LABEL_CLUSTER_ID,
    LABEL_MANAGED_BY, LABEL_SHARD, LABEL_WORKSPACE, LABEL_WORKSPACE_ID,
};
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
    status: Option<Packed>,
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
            status: m.status.as_ref().and_then(Packed::pack),
        }
    }

    /// The status, decoded (it was encoded from the same type, so decoding cannot fail short of
    /// a bug; such a status reads as absent and is rewritten).
    pub fn status(&self) -> Option<EmrRayClusterStatus> {
        self.status.as_ref().and_then(Packed::unpack)
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
        assert_eq!(c.status(), m.status, "the status round-trips");

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
