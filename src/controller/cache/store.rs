//! The watch-fed store of [`CachedMirror`]s, with the deletes it saw lately.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::watcher;

use super::CachedMirror;
use crate::api::EmrRayCluster;

#[derive(Default)]
struct Objects {
    /// By `namespace/name`.
    current: HashMap<String, Arc<CachedMirror>>,
    /// A relist in progress: the objects seen so far, swapped in when it completes.
    relist: Option<HashMap<String, Arc<CachedMirror>>>,
    /// Keys of the current mirrors without a controlling owner (see [`MirrorStore::orphans`]).
    orphans: BTreeSet<String>,
}

impl Objects {
    fn insert(&mut self, k: String, c: Arc<CachedMirror>) -> Option<Arc<CachedMirror>> {
        if c.controller_uid.is_none() {
            self.orphans.insert(k.clone());
        } else if !self.orphans.is_empty() {
            self.orphans.remove(&k);
        }
        self.current.insert(k, c)
    }

    fn remove(&mut self, k: &str) -> Option<Arc<CachedMirror>> {
        if !self.orphans.is_empty() {
            self.orphans.remove(k);
        }
        self.current.remove(k)
    }
}

/// How long the store remembers that it saw an object deleted (as long as the operator's own
/// writes may override the store: see `state::Written`).
pub const DELETES_KEPT: Duration = Duration::from_secs(30);

/// The objects the watch saw deleted lately, by `namespace/name`: the deleted object's UID and
/// when. A mirror the operator created and someone deleted before the operator looked again is
/// then known to be gone, not "not seen yet".
#[derive(Default)]
struct RecentDeletes {
    by_key: HashMap<String, (String, Instant)>,
    /// Size at which old entries are next dropped (amortised: a mass delete stays linear).
    prune_at: usize,
}

impl RecentDeletes {
    fn insert(&mut self, k: String, uid: String, now: Instant) {
        if self.by_key.len() >= self.prune_at {
            self.by_key
                .retain(|_, (_, at)| now.duration_since(*at) < DELETES_KEPT);
            self.prune_at = (self.by_key.len() * 2).max(64);
        }
        self.by_key.insert(k, (uid, now));
    }

    fn contains(&self, k: &str, uid: &str, now: Instant) -> bool {
        self.by_key
            .get(k)
            .is_some_and(|(u, at)| u == uid && now.duration_since(*at) < DELETES_KEPT)
    }
}

/// The watch-fed store of [`CachedMirror`]s (what a kube reflector store is, for records that
/// are not Kubernetes objects).
///
/// Lock order: `objects` before `deletes`; neither is held while taking another lock.
#[derive(Default)]
pub struct MirrorStore {
    objects: RwLock<Objects>,
    deletes: Mutex<RecentDeletes>,
    /// Set once the first complete list has been seen (a signal, not polled).
    ready: tokio::sync::watch::Sender<bool>,
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl MirrorStore {
    fn read(&self) -> RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watch event. Returns the controller UID of the record it replaced or
    /// removed, if any: a mirror whose owner changed concerns its former owner too.
    pub fn apply(&self, ev: &watcher::Event<EmrRayCluster>) -> Option<String> {
        // The record (a status serialized into its digest) is built before the lock is taken.
        let record = match ev {
            watcher::Event::Apply(m) | watcher::Event::InitApply(m) => {
                let c = CachedMirror::of(m);
                Some((key(&c.namespace, &c.name), Arc::new(c)))
            }
            _ => None,
        };
        let mut o = self.write();
        let replaced = match (ev, record) {
            (watcher::Event::Apply(_), Some((k, c))) => o.insert(k, c),
            (watcher::Event::InitApply(_), Some((k, c))) => {
                o.relist.get_or_insert_default().insert(k, c);
                None
            }
            (watcher::Event::Delete(m), _) => {
                o.remove(&key(&m.namespace().unwrap_or_default(), &m.name_any()))
            }
            (watcher::Event::Init, _) => {
                o.relist = Some(HashMap::new());
                None
            }
            (watcher::Event::InitDone, _) => {
                o.current = o.relist.take().unwrap_or_default();
                o.current.shrink_to_fit();
                o.orphans = o
                    .current
                    .iter()
                    .filter(|(_, c)| c.controller_uid.is_none())
                    .map(|(k, _)| k.clone())
                    .collect();
                None
            }
            _ => None,
        };
        drop(o);
        match ev {
            watcher::Event::InitDone => {
                self.ready.send_replace(true);
            }
            watcher::Event::Delete(m) => {
                if let Some(uid) = &m.metadata.uid {
                    crate::controller::lock(&self.deletes).insert(
                        key(&m.namespace().unwrap_or_default(), &m.name_any()),
                        uid.clone(),
                        Instant::now(),
                    );
                }
            }
            _ => {}
        }
        replaced.and_then(|r| r.controller_uid.clone())
    }

    /// Whether the watch saw the object `ns/name` with UID `uid` deleted (within
    /// [`DELETES_KEPT`]).
    pub fn saw_deleted(&self, ns: &str, name: &str, uid: &str) -> bool {
        crate::controller::lock(&self.deletes).contains(&key(ns, name), uid, Instant::now())
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<CachedMirror>> {
        self.read().current.get(&key(ns, name)).cloned()
    }

    /// The mirrors of namespace `ns` controlled by workspace `uid`.
    pub fn controlled_by(&self, ns: &str, uid: &str) -> Vec<Arc<CachedMirror>> {
        self.read()
            .current
            .values()
            .filter(|m| m.namespace == ns && m.controlled_by(uid))
            .cloned()
            .collect()
    }

    /// The mirrors without a controlling owner reference: those of a workspace deleted with
    /// `--cascade=orphan` (the operator writes none). `of`: only those naming workspace
    /// `(namespace, name)` in their `spec.workspaceRef`. Cheap when there are none.
    pub fn orphans(&self, of: Option<(&str, &str)>) -> Vec<Arc<CachedMirror>> {
        let o = self.read();
        o.orphans
            .iter()
            .filter_map(|k| o.current.get(k))
            .filter(|m| of.is_none_or(|(ns, ws)| m.namespace == ns && m.workspace_ref == ws))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first complete list has been seen.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first complete list has been seen.
    pub async fn wait_ready(&self) {
        // The sender lives in `self`, so the wait ends only by readiness.
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::mirror;
    use super::*;

    #[test]
    fn the_store_follows_events_and_swaps_in_a_relist_when_complete() {
        let s = MirrorStore::default();
        assert!(!s.is_ready());
        s.apply(&watcher::Event::Init);
        s.apply(&watcher::Event::InitApply(mirror("a", "1")));
        assert!(
            s.get("ns", "a").is_none(),
            "not visible before the list completes"
        );
        s.apply(&watcher::Event::InitDone);
        assert!(s.is_ready());
        assert_eq!(
            s.get("ns", "a").unwrap().resource_version.as_deref(),
            Some("1")
        );
        s.apply(&watcher::Event::Apply(mirror("b", "2")));
        s.apply(&watcher::Event::Apply(mirror("a", "3")));
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get("ns", "a").unwrap().resource_version.as_deref(),
            Some("3")
        );
        assert_eq!(s.controlled_by("ns", "u1").len(), 2);
        assert!(s.controlled_by("other", "u1").is_empty());
        assert_eq!(
            s.apply(&watcher::Event::Delete(mirror("b", "2")))
                .as_deref(),
            Some("u1"),
            "the former owner is told"
        );
        assert!(s.get("ns", "b").is_none());
        // A relist replaces everything at its end: "a" is gone, "c" is new.
        s.apply(&watcher::Event::Init);
        s.apply(&watcher::Event::InitApply(mirror("c", "4")));
        assert!(
            s.get("ns", "a").is_some(),
            "the old state serves until the relist ends"
        );
        s.apply(&watcher::Event::InitDone);
        assert!(s.get("ns", "a").is_none());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn orphans_are_indexed_through_events_and_relists() {
        let orphan = |name: &str, rv: &str| {
            let mut m = mirror(name, rv);
            m.metadata.owner_references = None;
            m
        };
        let names = |v: Vec<Arc<CachedMirror>>| {
            let mut n: Vec<String> = v.iter().map(|m| m.name.clone()).collect();
            n.sort();
            n
        };
        let s = MirrorStore::default();
        s.apply(&watcher::Event::Init);
        s.apply(&watcher::Event::InitApply(orphan("a", "1")));
        s.apply(&watcher::Event::InitApply(mirror("b", "1")));
        s.apply(&watcher::Event::InitDone);
        assert_eq!(names(s.orphans(None)), ["a"]);
        // The garbage collector takes b's owner away; a is adopted again.
        s.apply(&watcher::Event::Apply(orphan("b", "2")));
        s.apply(&watcher::Event::Apply(mirror("a", "2")));
        assert_eq!(names(s.orphans(None)), ["b"]);
        assert_eq!(names(s.orphans(Some(("ns", "ws")))), ["b"]);
        assert!(s.orphans(Some(("ns", "other"))).is_empty());
        assert!(s.orphans(Some(("other", "ws"))).is_empty());
        s.apply(&watcher::Event::Delete(orphan("b", "2")));
        assert!(s.orphans(None).is_empty());
        s.apply(&watcher::Event::Init);
        s.apply(&watcher::Event::InitApply(orphan("c", "3")));
        s.apply(&watcher::Event::InitDone);
        assert_eq!(names(s.orphans(None)), ["c"]);
    }
}
