//! Each namespace's share of the remote calls in flight (its listing slots), and the
//! workspaces waiting for one.
//!
//! A due workspace whose namespace has every slot taken does not wait in its reconcile (it
//! would hold one of the operator's `--concurrency` reconcile slots outside its namespace's
//! share, and one tenant with many workspaces would starve every other): it gives its reconcile
//! slot back and joins its namespace's queue. Each slot given back wakes the first workspace in
//! that queue (through the controller's `reconcile_on` stream), so a waiting workspace comes
//! again the moment its share frees, not on a timer; a fallback timer covers a woken workspace
//! that no longer wants the slot (deleted, suspended).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use super::lock;
use crate::api::EmrWorkspace;

/// Who waits for a slot.
pub type Waiter = ObjectRef<EmrWorkspace>;

/// Per namespace, the slots in use (at most `per_namespace`) and the workspaces waiting.
pub struct NamespaceSlots(Arc<Shared>);

struct Shared {
    per_namespace: usize,
    /// Only namespaces with a slot taken or a workspace waiting have an entry.
    by_ns: Mutex<HashMap<String, Queue>>,
    /// Where a workspace is woken when a slot of its namespace frees.
    wake: OnceLock<UnboundedSender<Waiter>>,
}

#[derive(Default)]
struct Queue {
    held: usize,
    waiting: VecDeque<Waiter>,
    queued: HashSet<Waiter>,
}

/// One of a namespace's slots, given back (and the next waiter woken) when dropped.
pub struct Slot {
    shared: Arc<Shared>,
    ns: String,
}

impl NamespaceSlots {
    pub fn new(per_namespace: usize) -> Self {
        NamespaceSlots(Arc::new(Shared {
            per_namespace: per_namespace.max(1),
            by_ns: Mutex::new(HashMap::new()),
            wake: OnceLock::new(),
        }))
    }

    /// Where to wake waiting workspaces (set once, by the controller that reconciles them).
    pub fn wake_with(&self, wake: UnboundedSender<Waiter>) {
        let _ = self.0.wake.set(wake);
    }

    /// A slot of `ns` if one is free now; otherwise `who`, if given, joins the namespace's
    /// queue (once), to be woken when a slot frees (a caller with its own retry, such as the
    /// `GetRayCluster` fetches, gives none). Taking the slot and joining the queue happen under
    /// the lock that giving a slot back takes, so no wake-up is lost between them.
    pub fn try_acquire(&self, ns: &str, who: Option<&Waiter>) -> Option<Slot> {
        let mut by_ns = lock(&self.0.by_ns);
        let q = by_ns.entry(ns.to_string()).or_default();
        if q.held < self.0.per_namespace {
            q.held += 1;
            if let Some(who) = who
                && q.queued.remove(who)
            {
                q.waiting.retain(|w| w != who);
            }
            return Some(Slot {
                shared: self.0.clone(),
                ns: ns.to_string(),
            });
        }
        if let Some(who) = who
            && q.queued.insert(who.clone())
        {
            q.waiting.push_back(who.clone());
        }
        None
    }

    /// Slots of `ns` in use, and workspaces waiting for one.
    pub fn load(&self, ns: &str) -> (usize, usize) {
        lock(&self.0.by_ns)
            .get(ns)
            .map_or((0, 0), |q| (q.held, q.waiting.len()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let next = {
            let mut by_ns = lock(&self.shared.by_ns);
            let Some(q) = by_ns.get_mut(&self.ns) else {
                return;
            };
            q.held = q.held.saturating_sub(1);
            let next = q.waiting.pop_front();
            if let Some(n) = &next {
                q.queued.remove(n);
            }
            if q.held == 0 && q.waiting.is_empty() {
                by_ns.remove(&self.ns);
            }
            next
        };
        if let (Some(next), Some(wake)) = (next, self.shared.wake.get()) {
            // The controller has stopped when this fails: nothing to wake.
            let _ = wake.unbounded_send(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(ns: &str, name: &str) -> Waiter {
        ObjectRef::new(name).within(ns)
    }

    #[test]
    fn namespace_slots_bound_one_namespace_only() {
        let slots = NamespaceSlots::new(2);
        let a1 = slots
            .try_acquire("a", Some(&ws("a", "1")))
            .expect("a's first slot");
        let _a2 = slots
            .try_acquire("a", Some(&ws("a", "2")))
            .expect("a's second slot");
        assert!(
            slots.try_acquire("a", Some(&ws("a", "3"))).is_none(),
            "no third listing of a at once"
        );
        let b1 = slots
            .try_acquire("b", Some(&ws("b", "1")))
            .expect("namespace b is not held up by a");
        drop(a1);
        assert!(
            slots.try_acquire("a", Some(&ws("a", "3"))).is_some(),
            "a slot of a came free"
        );
        let _b2 = slots
            .try_acquire("b", Some(&ws("b", "2")))
            .expect("b's second slot");
        assert!(slots.try_acquire("b", Some(&ws("b", "3"))).is_none());
        drop(b1);
        assert!(
            slots.try_acquire("b", Some(&ws("b", "3"))).is_some(),
            "free again"
        );
    }

    #[test]
    fn a_slot_given_back_wakes_the_first_waiter_once() {
        let slots = NamespaceSlots::new(1);
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        slots.wake_with(tx);
        let held = slots.try_acquire("a", Some(&ws("a", "1"))).unwrap();
        for name in ["2", "3", "2"] {
            assert!(slots.try_acquire("a", Some(&ws("a", name))).is_none());
        }
        assert_eq!(slots.load("a"), (1, 2), "a waiter is queued once");
        drop(held);
        assert_eq!(rx.try_recv().ok(), Some(ws("a", "2")));
        assert!(rx.try_recv().is_err(), "one slot, one wake-up");
        // The woken one takes the slot; giving it back wakes the next.
        let s2 = slots.try_acquire("a", Some(&ws("a", "2"))).unwrap();
        drop(s2);
        assert_eq!(rx.try_recv().ok(), Some(ws("a", "3")));
        // A waiter that took a slot without being woken leaves the queue.
        let _s3 = slots.try_acquire("a", Some(&ws("a", "3"))).unwrap();
        assert_eq!(slots.load("a"), (1, 0));
        drop(_s3);
        assert_eq!(slots.load("a"), (0, 0), "an idle namespace holds nothing");
        assert!(rx.try_recv().is_err());
    }
}
