//! The overlay of the operator's own mirror writes on the watch-fed store, and the record of
//! which workspaces' mirrors the watch reported changed: a workspace's mirrors as a reconcile
//! must see them.
//!
//! `resourceVersion`s are opaque: they are only ever compared for equality.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CachedMirror, MirrorStore};
use crate::api::EmrRayCluster;
use crate::controller::lock;

/// A workspace's mirrors by object name.
pub type MirrorsByName = HashMap<String, Arc<CachedMirror>>;

/// Our own write of a mirror, overriding the store until the store has seen it.
///
/// Invariant: the store has not caught up while the object it holds is absent (for a create,
/// unless the store saw that very object deleted since) or still has one of `stale_versions`
/// (the version before our writes, and the versions our earlier writes in the same chain
/// produced). Any other version is our write or newer.
#[derive(Clone, Debug)]
struct Written {
    /// The object our last write returned (`None`: we deleted it).
    obj: Option<Arc<CachedMirror>>,
    /// Its UID: a create seen by the watch and deleted again (by hand, before the operator
    /// looked) must not read as "not in the store yet".
    uid: Option<String>,
    stale_versions: Vec<String>,
    /// The store had no such object before our writes.
    created: bool,
    at: Instant,
}

/// How long our own writes may override the store (a safety net: the watch normally catches up
/// within milliseconds).
const WRITTEN_TTL: Duration = Duration::from_secs(30);

/// Mirror changes seen by the watch, per owning workspace UID.
#[derive(Default)]
pub struct MirrorChanges {
    changed: Mutex<HashSet<String>>,
    /// How many complete lists the watch has started: after each, every workspace rescans.
    relists: AtomicU64,
    /// Per workspace UID, the relist count at its last scan.
    scanned_at: Mutex<HashMap<String, u64>>,
}

impl MirrorChanges {
    /// Records a watch event for this mirror.
    /// `former_owner`: the controller of the record the event replaced (a mirror re-owned by
    /// hand leaves its former owner's scan stale otherwise).
    pub fn touched(&self, m: &EmrRayCluster, former_owner: Option<String>) {
        let mut changed = lock(&self.changed);
        for o in m.metadata.owner_references.iter().flatten() {
            changed.insert(o.uid.clone());
        }
        changed.extend(former_owner);
    }

    /// Records that the watch started a new complete list.
    pub fn relisted(&self) {
        self.relists.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the workspace must rescan; clears its mark (before the scan, so that an event
    /// arriving during the scan marks it again).
    fn take(&self, owner_uid: &str) -> bool {
        let marked = lock(&self.changed).remove(owner_uid);
        let relists = self.relists.load(Ordering::SeqCst);
        let relisted =
            lock(&self.scanned_at).insert(owner_uid.to_string(), relists) != Some(relists);
        marked || relisted
    }
}

/// A workspace's mirrors as the watch-fed store has them, corrected by our own recent writes.
/// The store is scanned only for workspaces whose mirrors the watch reported changed (or after
/// a relist): a steady state costs no scan of all mirrors per reconcile.
pub struct MirrorCache {
    store: Arc<MirrorStore>,
    changes: Arc<MirrorChanges>,
    by_owner: Mutex<HashMap<String, Arc<MirrorsByName>>>,
    written: Mutex<HashMap<String, Written>>,
}

impl MirrorCache {
    pub fn new(store: Arc<MirrorStore>, changes: Arc<MirrorChanges>) -> Self {
        MirrorCache {
            store,
            changes,
            by_owner: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &MirrorStore {
        &self.store
    }

    /// The mirror named `name` in `ns` as the store has it (whoever owns it).
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<CachedMirror>> {
        self.store.get(ns, name)
    }

    /// Records the result of one of our writes (`obj: None` for a delete). `before` is the
    /// object the write was planned against. Returns the record of `obj`.
    pub fn record_write(
        &self,
        ns: &str,
        name: &str,
        before: Option<&CachedMirror>,
        obj: Option<&EmrRayCluster>,
    ) -> Option<Arc<CachedMirror>> {
        let key = format!("{ns}/{name}");
        let now = Instant::now();
        let mut written = lock(&self.written);
        written.retain(|_, e| now.duration_since(e.at) < WRITTEN_TTL);
        let prior = written.remove(&key);
        let (mut stale_versions, created) = match prior {
            Some(p) => {
                let mut v = p.stale_versions;
                if let Some(rv) = p.obj.as_ref().and_then(|o| o.resource_version.clone()) {
                    v.push(rv);
                }
                (v, p.created)
            }
            None => (
                before
                    .and_then(|b| b.resource_version.clone())
                    .into_iter()
                    .collect(),
                before.is_none(),
            ),
        };
        stale_versions.dedup();
        tracing::debug!(
            mirror = %key,
            version = obj.and_then(|o| o.metadata.resource_version.as_deref()),
            stale = ?stale_versions,
            created,
            "own mirror write recorded"
        );
        let uid = obj.and_then(|o| o.metadata.uid.clone());
        let obj = obj.map(|o| Arc::new(CachedMirror::of(o)));
        written.insert(
            key,
            Written {
                obj: obj.clone(),
                uid,
                stale_versions,
                created,
                at: now,
            },
        );
        obj
    }

    /// The mirrors controlled by workspace `owner_uid` in `ns`, keyed by cluster ID.
    pub fn current(&self, ns: &str, owner_uid: &str) -> HashMap<String, Arc<CachedMirror>> {
        let owned = |m: &CachedMirror| m.namespace == ns && m.controlled_by(owner_uid);
        let cached = if self.changes.take(owner_uid) {
            None
        } else {
            lock(&self.by_owner).get(owner_uid).cloned()
        };
        let base = match cached {
            Some(c) => c,
            None => {
                let scanned: MirrorsByName = self
                    .store
                    .controlled_by(ns, owner_uid)
                    .into_iter()
                    .map(|m| (m.name.clone(), m))
                    .collect();
                let scanned = Arc::new(scanned);
                lock(&self.by_owner).insert(owner_uid.to_string(), scanned.clone());
                scanned
            }
        };
        let mut by_name: MirrorsByName = (*base).clone();
        let prefix = format!("{ns}/");
        let now = Instant::now();
        let mut rescan = false;
        lock(&self.written).retain(|k, e| {
            if now.duration_since(e.at) >= WRITTEN_TTL {
                return false;
            }
            let Some(name) = k.strip_prefix(&prefix) else {
                return true;
            };
            let in_store = self.get(ns, name);
            let deleted = |uid: &str| self.store.saw_deleted(ns, name, uid);
            if !caught_up(e, in_store.as_deref(), deleted) {
                match &e.obj {
                    Some(ours) if owned(ours) => {
                        by_name.insert(name.to_string(), ours.clone());
                    }
                    Some(_) => {}
                    None => {
                        by_name.remove(name);
                    }
                }
                true
            } else {
                tracing::debug!(
                    mirror = %k,
                    store = in_store.as_ref().and_then(|m| m.resource_version.as_deref()),
                    "own mirror write caught up"
                );
                // The store's record (as new as our write, or newer) stands for it from now on,
                // not the scan, which may predate the watch event that caught up (the watch
                // stores an event before it marks the owner changed): this call takes the
                // store's record, and the next one scans again.
                match in_store.filter(|m| owned(m)) {
                    Some(m) => by_name.insert(name.to_string(), m),
                    None => by_name.remove(name),
                };
                rescan = true;
                false
            }
        });
        if rescan {
            // The scan is taken again at the next call (taken alone: see the lock order).
            lock(&self.by_owner).remove(owner_uid);
        }
        by_name
            .into_values()
            .map(|m| (m.cluster_id.clone(), m))
            .collect()
    }

    /// Forgets the cached scan of a deleted workspace.
    pub fn forget_owner(&self, owner_uid: &str) {
        lock(&self.by_owner).remove(owner_uid);
        lock(&self.changes.scanned_at).remove(owner_uid);
    }
}

/// Whether the store has seen our write (see [`Written`]'s invariant). `deleted(uid)`: whether
/// the store saw the object with that UID deleted.
fn caught_up(w: &Written, in_store: Option<&CachedMirror>, deleted: impl Fn(&str) -> bool) -> bool {
    match (in_store, &w.obj) {
        // Deleted by us and gone from the store.
        (None, None) => true,
        // Created by us and not in the store yet, unless the store saw it and then its delete.
        (None, Some(_)) => !w.created || w.uid.as_deref().is_some_and(deleted),
        (Some(s), _) => !w
            .stale_versions
            .iter()
            .any(|v| Some(v) == s.resource_version.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EmrRayClusterSpec;

    fn mirror(name: &str, rv: &str) -> CachedMirror {
        let mut m = EmrRayCluster::new(
            name,
            EmrRayClusterSpec {
                workspace_ref: "ws".into(),
                workspace_id: "w".into(),
                region_id: "r".into(),
                cluster_id: name.into(),
            },
        );
        m.metadata.resource_version = Some(rv.into());
        CachedMirror::of(&m)
    }

    fn written(obj: Option<&str>, stale: &[&str], created: bool) -> Written {
        Written {
            obj: obj.map(|rv| Arc::new(mirror("m", rv))),
            uid: obj.map(|_| "uid-m".into()),
            stale_versions: stale.iter().map(|s| s.to_string()).collect(),
            created,
            at: Instant::now(),
        }
    }

    #[test]
    fn overlay_holds_until_the_store_shows_another_version() {
        let none = |_: &str| false;
        // Updated from version "a" (our writes produced "b" then "c").
        let w = written(Some("c"), &["a", "b"], false);
        assert!(!caught_up(&w, Some(&mirror("m", "a")), none));
        assert!(
            !caught_up(&w, Some(&mirror("m", "b")), none),
            "first of two writes seen"
        );
        assert!(caught_up(&w, Some(&mirror("m", "c")), none));
        // Versions are opaque: a "smaller" string is as new as any other.
        assert!(caught_up(&w, Some(&mirror("m", "0")), none));
        // Created by us: absent from the store means not caught up...
        let w = written(Some("x"), &[], true);
        assert!(!caught_up(&w, None, none));
        assert!(caught_up(&w, Some(&mirror("m", "x")), none));
        // ...unless the store saw that very object deleted (not another one of the same name).
        assert!(caught_up(&w, None, |uid| uid == "uid-m"));
        assert!(!caught_up(&w, None, |uid| uid == "uid-other"));
        // Deleted by us.
        let w = written(None, &["a"], false);
        assert!(!caught_up(&w, Some(&mirror("m", "a")), none));
        assert!(caught_up(&w, None, none));
    }

    /// Mirror `m` of cluster `c-1`, controlled by workspace `ws-uid`, at version `rv`.
    fn full(rv: &str) -> EmrRayCluster {
        let mut m = EmrRayCluster::new(
            "m",
            EmrRayClusterSpec {
                workspace_ref: "ws".into(),
                workspace_id: "w".into(),
                region_id: "r".into(),
                cluster_id: "c-1".into(),
            },
        );
        m.metadata.namespace = Some("ns".into());
        m.metadata.uid = Some("uid-m".into());
        m.metadata.resource_version = Some(rv.into());
        m.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                uid: "ws-uid".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        m
    }

    /// The fault suite's failure of stop 26: a mirror created (metadata write "1", status write
    /// "2"); the scan is taken when the watch has shown "1"; the watch stores "2" and a
    /// reconcile reads the mirrors before the watch marks the owner changed. The write has
    /// caught up: the store's "2" stands for it, never the scan's "1" (a plan on "1", without
    /// the status, wrote the status again with new transition times).
    #[test]
    fn a_caught_up_write_reads_as_the_store_has_it_not_as_the_scan() {
        use kube::runtime::watcher::Event;
        let store = Arc::new(MirrorStore::default());
        let changes = Arc::new(MirrorChanges::default());
        let cache = MirrorCache::new(store.clone(), changes.clone());
        store.apply(&Event::Init);
        store.apply(&Event::InitDone);
        cache.record_write("ns", "m", None, Some(&full("1")));
        let created = cache.current("ns", "ws-uid")["c-1"].clone();
        cache.record_write("ns", "m", Some(&created), Some(&full("2")));
        store.apply(&Event::Apply(full("1")));
        changes.touched(&full("1"), None);
        // Scanned now: the scan holds "1"; our write "2" overlays it.
        assert_eq!(
            cache.current("ns", "ws-uid")["c-1"]
                .resource_version
                .as_deref(),
            Some("2")
        );
        // The watch stores "2" but has not marked the owner changed yet.
        store.apply(&Event::Apply(full("2")));
        assert_eq!(
            cache.current("ns", "ws-uid")["c-1"]
                .resource_version
                .as_deref(),
            Some("2"),
            "caught up: the store's record, not the scan's"
        );
        assert_eq!(
            cache.current("ns", "ws-uid")["c-1"]
                .resource_version
                .as_deref(),
            Some("2"),
            "and so on after the overlay forgot the write"
        );
    }

    /// The CI failure of stop 18: the operator creates a mirror (two writes: metadata, then
    /// status); the watch shows both and then a hand delete, all before the workspace is
    /// reconciled again. The mirror must read as absent (to be created again), not as our
    /// create "not in the store yet".
    #[test]
    fn a_mirror_we_created_and_someone_deleted_reads_as_absent() {
        use kube::runtime::watcher::Event;
        let full = full;
        let store = Arc::new(MirrorStore::default());
        let changes = Arc::new(MirrorChanges::default());
        let cache = MirrorCache::new(store.clone(), changes.clone());
        store.apply(&Event::Init);
        store.apply(&Event::InitDone);
        assert!(cache.current("ns", "ws-uid").is_empty());
        cache.record_write("ns", "m", None, Some(&full("1")));
        let first = cache.current("ns", "ws-uid");
        assert!(
            first.contains_key("c-1"),
            "our create, before the watch shows it"
        );
        let created = first["c-1"].clone();
        cache.record_write("ns", "m", Some(&created), Some(&full("2")));
        for ev in [
            Event::Apply(full("1")),
            Event::Apply(full("2")),
            Event::Delete(full("3")),
        ] {
            store.apply(&ev);
            if let Event::Apply(m) | Event::Delete(m) = &ev {
                changes.touched(m, None);
            }
        }
        assert!(
            cache.current("ns", "ws-uid").is_empty(),
            "deleted by hand: to be created again"
        );
        // A create of the same name after that is ours again until the watch shows it.
        let mut again = full("4");
        again.metadata.uid = Some("uid-m2".into());
        cache.record_write("ns", "m", None, Some(&again));
        assert!(cache.current("ns", "ws-uid").contains_key("c-1"));
    }
}
