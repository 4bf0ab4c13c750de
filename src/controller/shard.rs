//! The namespaces one shard serves.
//!
//! A shard is a cluster admin's tool (capacity, isolation between tenants), so it is chosen by
//! the label [`LABEL_SHARD`] of a workspace's **Namespace** — which namespace editors (the
//! built-in `edit` and `admin` roles) cannot change — and never by a label of the
//! `EmrWorkspace`, which its tenant writes. A sharded replica's namespace watch, label-selected
//! by its `--shard-selector`, feeds [`ShardNamespaces`]; the reconciler serves a workspace only
//! while its namespace is in it, and labels the workspace's mirrors with the namespace's shard
//! value, so that the shard's mirror watch (selected by the same selector) sees exactly its own
//! mirrors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::api::LABEL_SHARD;

/// The namespaces this replica's shard serves, each with the value of its [`LABEL_SHARD`] label
/// (`None`: unlabelled, served by a shard whose selector admits that, such as a default
/// `notin (a,b)` shard).
///
/// Invariants: it holds exactly the namespaces of the watch's last complete list plus the
/// events since (a re-list replaces it at its end, never half-way); it is ready from the first
/// complete list on, and never unready again.
#[derive(Debug, Default)]
pub struct ShardNamespaces {
    served: Mutex<Served>,
    ready: AtomicBool,
    became_ready: Notify,
}

#[derive(Debug, Default)]
struct Served {
    /// Namespace → its shard label value.
    namespaces: HashMap<String, Option<String>>,
    /// During a re-list (from `Init` to `InitDone`): the namespaces listed so far.
    relist: Option<HashMap<String, Option<String>>>,
}

/// How a namespace's membership in this shard changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// It joined the shard: its workspaces are this shard's to serve (and their mirrors, still
    /// labelled for another shard, to take over).
    Joined(String),
    /// It stays in the shard with another label value (say unlabelled → `c` in a default
    /// shard): its mirrors are relabelled.
    Relabelled(String),
    /// It left the shard (relabelled into another, or deleted): its workspaces are forgotten,
    /// their mirrors left to the shard that serves them now.
    Left(String),
}

impl Change {
    pub fn namespace(&self) -> &str {
        match self {
            Change::Joined(ns) | Change::Relabelled(ns) | Change::Left(ns) => ns,
        }
    }
}

/// A workspace whose namespace this replica's shard does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotServed;

impl ShardNamespaces {
    /// Takes one event of the namespace watch in; returns the namespaces whose membership
    /// changed (sorted; none while a re-list is under way, all of them at its end).
    pub fn apply(&self, ev: &watcher::Event<PartialObjectMeta<Namespace>>) -> Vec<Change> {
        let mut served = self.lock();
        let changes = match ev {
            watcher::Event::Init => {
                served.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(ns) => {
                let (name, label) = entry(ns);
                served.relist.get_or_insert_default().insert(name, label);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = served.relist.take().unwrap_or_default();
                let mut changes: Vec<Change> = served
                    .namespaces
                    .keys()
                    .filter(|ns| !listed.contains_key(*ns))
                    .map(|ns| Change::Left(ns.clone()))
                    .collect();
                for (name, label) in &listed {
                    changes.extend(change(&served.namespaces, name, label));
                }
                served.namespaces = listed;
                changes
            }
            watcher::Event::Apply(ns) => {
                let (name, label) = entry(ns);
                let change = change(&served.namespaces, &name, &label);
                served.namespaces.insert(name, label);
                change.into_iter().collect()
            }
            watcher::Event::Delete(ns) => served
                .namespaces
                .remove(&ns.name_any())
                .map(|_| Change::Left(ns.name_any()))
                .into_iter()
                .collect(),
        };
        drop(served);
        if matches!(ev, watcher::Event::InitDone) && !self.ready.swap(true, Ordering::SeqCst) {
            self.became_ready.notify_waiters();
        }
        let mut changes = changes;
        changes.sort();
        changes
    }

    /// The shard label value the mirrors of namespace `ns` carry, or [`NotServed`].
    pub fn label(&self, ns: &str) -> Result<Option<String>, NotServed> {
        self.lock().namespaces.get(ns).cloned().ok_or(NotServed)
    }

    /// Whether the first complete list of namespaces has been taken in.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Waits for the first complete list of namespaces.
    pub async fn wait_ready(&self) {
        loop {
            // Registered before the check: a notification between the two is not lost.
            let notified = self.became_ready.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    /// Locks the sets, recovering them if a panicking thread poisoned the lock: every update
    /// leaves them valid (maps of independent entries).
    fn lock(&self) -> MutexGuard<'_, Served> {
        crate::controller::lock(&self.served)
    }
}

/// A namespace's name and shard label value.
fn entry(ns: &PartialObjectMeta<Namespace>) -> (String, Option<String>) {
    (ns.name_any(), ns.labels().get(LABEL_SHARD).cloned())
}

/// The change when namespace `name` is (still) served with `label`, given what was served.
fn change(
    before: &HashMap<String, Option<String>>,
    name: &str,
    label: &Option<String>,
) -> Option<Change> {
    match before.get(name) {
        None => Some(Change::Joined(name.to_string())),
        Some(old) if old != label => Some(Change::Relabelled(name.to_string())),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use kube::core::PartialObjectMetaExt;

    fn ns(name: &str, label: Option<&str>) -> PartialObjectMeta<Namespace> {
        ObjectMeta {
            name: Some(name.into()),
            labels: label.map(|l| [(LABEL_SHARD.to_string(), l.to_string())].into()),
            ..Default::default()
        }
        .into_response_partial()
    }

    fn joined(n: &str) -> Change {
        Change::Joined(n.into())
    }
    fn relabelled(n: &str) -> Change {
        Change::Relabelled(n.into())
    }
    fn left(n: &str) -> Change {
        Change::Left(n.into())
    }

    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};

    #[test]
    fn namespaces_join_move_and_leave() {
        let s = ShardNamespaces::default();
        assert!(!s.is_ready());
        assert_eq!(
            s.label("team-a"),
            Err(NotServed),
            "nothing served before the list"
        );
        // (event, changes, then the label of team-a and team-b)
        type Row<'a> = (
            watcher::Event<PartialObjectMeta<Namespace>>,
            Vec<Change>,
            Result<Option<&'a str>, NotServed>,
            Result<Option<&'a str>, NotServed>,
        );
        let rows: Vec<Row> = vec![
            (Init, vec![], Err(NotServed), Err(NotServed)),
            (
                InitApply(ns("team-a", Some("a"))),
                vec![],
                Err(NotServed),
                Err(NotServed),
            ),
            (
                InitApply(ns("team-b", None)),
                vec![],
                Err(NotServed),
                Err(NotServed),
            ),
            (
                InitDone,
                vec![joined("team-a"), joined("team-b")],
                Ok(Some("a")),
                Ok(None),
            ),
            // An update that leaves the label alone changes nothing.
            (
                Apply(ns("team-a", Some("a"))),
                vec![],
                Ok(Some("a")),
                Ok(None),
            ),
            // Still selected (a default shard), another value: the mirrors are relabelled.
            (
                Apply(ns("team-b", Some("c"))),
                vec![relabelled("team-b")],
                Ok(Some("a")),
                Ok(Some("c")),
            ),
            // Relabelled out of the selector: the watch reports a deletion.
            (
                Delete(ns("team-a", Some("b"))),
                vec![left("team-a")],
                Err(NotServed),
                Ok(Some("c")),
            ),
            (
                Delete(ns("team-a", None)),
                vec![],
                Err(NotServed),
                Ok(Some("c")),
            ),
            (
                Apply(ns("team-a", Some("a"))),
                vec![joined("team-a")],
                Ok(Some("a")),
                Ok(Some("c")),
            ),
        ];
        for (i, (ev, want, a, b)) in rows.into_iter().enumerate() {
            assert_eq!(s.apply(&ev), want, "row {i}");
            assert_eq!(s.label("team-a"), a.map(|v| v.map(String::from)), "row {i}");
            assert_eq!(s.label("team-b"), b.map(|v| v.map(String::from)), "row {i}");
        }
        assert!(s.is_ready());
    }

    #[test]
    fn a_relist_replaces_the_set_at_its_end() {
        let s = ShardNamespaces::default();
        for ev in [
            Init,
            InitApply(ns("stays", Some("a"))),
            InitApply(ns("goes", Some("a"))),
            InitApply(ns("moves", None)),
            InitDone,
        ] {
            s.apply(&ev);
        }
        // The watch lost its place and lists again: until the list is complete, the old set
        // is served.
        assert_eq!(s.apply(&Init), vec![]);
        assert_eq!(s.apply(&InitApply(ns("stays", Some("a")))), vec![]);
        assert_eq!(s.apply(&InitApply(ns("moves", Some("c")))), vec![]);
        assert_eq!(s.apply(&InitApply(ns("new", Some("a")))), vec![]);
        assert_eq!(s.label("goes"), Ok(Some("a".into())));
        assert_eq!(s.label("new"), Err(NotServed));
        assert_eq!(
            s.apply(&InitDone),
            vec![joined("new"), relabelled("moves"), left("goes")]
        );
        assert_eq!(s.label("goes"), Err(NotServed));
        assert_eq!(s.label("moves"), Ok(Some("c".into())));
        assert_eq!(s.label("stays"), Ok(Some("a".into())));
    }

    #[tokio::test]
    async fn ready_after_the_first_complete_list() {
        let s = std::sync::Arc::new(ShardNamespaces::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait_ready().await }
        });
        s.apply(&Init);
        assert!(!s.is_ready());
        s.apply(&InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        // An empty shard is ready too, and stays ready through a re-list.
        s.apply(&Init);
        assert!(s.is_ready());
        s.wait_ready().await;
    }
}
