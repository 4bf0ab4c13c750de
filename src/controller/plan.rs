//! The pure decision of a sync: from the last complete listing, the mirrors that exist, the
//! workspace's policy and whether the data is stale, the list of writes that make the mirrors
//! right. Nothing here performs I/O; [`super::apply`] carries the actions out.
//!
//! The rules users rely on, each a row of the table tests below:
//! * a listed cluster gets a mirror, written only where it differs;
//! * a mirror missing from the listing is deleted (`goneClusterPolicy: Delete`) or kept with
//!   `gone: true` (`Keep`) **only** when the latest listing attempt succeeded;
//! * after a failed attempt, nothing is deleted or blanked: mirrors keep their data and say
//!   `Synced=False` with the failure's reason (a listed cluster's mirror deleted meanwhile is
//!   created again from what the listing kept of it, its ID and state);
//! * a listing that ended exactly on a page boundary never removes anything
//!   (`RemovalUnconfirmed`);
//! * a name held by another workspace's mirror is left alone (`MirrorNameConflict`);
//! * an unhealthy cluster's mirror shows its fetched instances; a failed fetch keeps what it
//!   shows; a healthy cluster's mirror shows none (`diagnose`);
//! * a mirror whose data must be kept as it is while the cache holds only a digest of its status
//!   is left alone and named in [`Plan::missing`]: the caller reads the statuses and plans again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use super::cache::{CachedMirror, SeenStatus, shape_digest, status_digest};
use super::diagnose::{Diagnoses, View};
use super::mirror::{self, Staleness};
use super::state::{Decoded, Listing};
use crate::api::{
    EmrRayClusterSpec, EmrRayClusterStatus, EmrWorkspace, GoneClusterPolicy, LABEL_CLUSTER_ID,
    LABEL_MANAGED_BY, LABEL_SHARD, LABEL_WORKSPACE, LABEL_WORKSPACE_ID, MANAGED_BY,
};
use crate::emr::RayCluster;
use crate::time::Time;

/// Per-mirror Events are replaced by one summary above this many creations and deletions.
pub const MAX_MIRROR_EVENTS_PER_SYNC: usize = 20;

/// Who owns the mirrors: the parts of an `EmrWorkspace` that shape them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub workspace_id: String,
    pub region_id: String,
    pub policy: GoneClusterPolicy,
    /// The shard label ([`LABEL_SHARD`]) of the workspace's namespace in a sharded replica,
    /// put on its mirrors so that a shard's mirror watch sees exactly its own mirrors.
    pub shard: Option<String>,
}

impl Owner {
    /// The owner for `ws`, whose mirrors carry the shard label value `shard` (its namespace's,
    /// never one the workspace itself carries: see [`super::shard`]).
    pub fn of(ws: &EmrWorkspace, shard: Option<String>) -> Self {
        Owner {
            namespace: ws.namespace().unwrap_or_default(),
            name: ws.name_any(),
            uid: ws.uid().unwrap_or_default(),
            workspace_id: ws.spec.workspace_id.clone(),
            region_id: ws.spec.region_id.clone(),
            policy: ws.spec.gone_cluster_policy,
            shard,
        }
    }

    /// The controller owner reference every mirror carries (deleting the workspace
    /// garbage-collects its mirrors).
    pub fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: EmrWorkspace::api_version(&()).to_string(),
            kind: EmrWorkspace::kind(&()).to_string(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn spec(&self, cluster_id: &str) -> EmrRayClusterSpec {
        EmrRayClusterSpec {
            workspace_ref: self.name.clone(),
            workspace_id: self.workspace_id.clone(),
            region_id: self.region_id.clone(),
            cluster_id: cluster_id.to_string(),
        }
    }

    pub fn labels(&self, cluster_id: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (LABEL_WORKSPACE.to_string(), mirror::label_value(&self.name)),
            (
                LABEL_WORKSPACE_ID.to_string(),
                mirror::label_value(&self.workspace_id),
            ),
            (
                LABEL_CLUSTER_ID.to_string(),
                mirror::label_value(cluster_id),
            ),
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        ]);
        if let Some(shard) = &self.shard {
            labels.insert(LABEL_SHARD.to_string(), shard.clone());
        }
        labels
    }

    /// Whether `m` already has the metadata and spec this owner gives it: spec, labels (a shard
    /// label the owner does not give is removed too), cluster-ID annotation, controller.
    fn metadata_matches(&self, m: &CachedMirror, cluster_id: &str) -> bool {
        let labels = self.labels(cluster_id);
        m.controlled_by(&self.uid)
            && m.shape
                == shape_digest(
                    &self.spec(cluster_id),
                    |k| labels.get(k).map(String::as_str),
                    Some(cluster_id),
                )
    }
}

/// What to write for one mirror.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Server-side apply of metadata and spec (creation or repair), then of the status (a new
    /// object has none; a repaired one a different one).
    Apply(EmrRayClusterStatus),
    /// Only the metadata or spec differs: their server-side apply; the status is already right.
    Metadata,
    /// Only the status differs.
    Status(EmrRayClusterStatus),
    Delete,
}

impl Write {
    /// The kind of write, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::Apply(_) => "apply",
            Write::Metadata => "metadata",
            Write::Status(_) => "status",
            Write::Delete => "delete",
        }
    }
}

/// The Event to publish once a write succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorEvent {
    Created {
        state: Option<String>,
    },
    StateChanged {
        from: Option<String>,
        to: Option<String>,
        message: Option<String>,
    },
    Gone,
    Deleted,
}

/// One mirror's write.
#[derive(Clone, Debug)]
pub struct Action {
    pub name: String,
    pub cluster_id: String,
    /// The mirror as it is now (`None`: it is created).
    pub prev: Option<Arc<CachedMirror>>,
    pub write: Write,
    pub event: Option<MirrorEvent>,
}

/// A mirror name held by another workspace's mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub owner: String,
}

/// The writes of one sync and what they add up to.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// Mirrors the workspace has once every action succeeded.
    pub mirrors: usize,
    /// Creations and deletions are summarised in one Event instead of one each.
    pub summarize_events: bool,
    /// Cluster IDs of mirrors whose status the plan needed whole and [`Input::statuses`] did not
    /// hold (their data must be kept as it is): nothing is planned for them.
    pub missing: Vec<String>,
}

/// Everything [`plan`] decides from.
pub struct Input<'a> {
    pub owner: &'a Owner,
    /// The last complete listing (`None`: none yet).
    pub listing: Option<&'a Listing>,
    /// Its clusters, when it was decoded in this reconcile (`None`: its listing failed, the
    /// mirrors of listed clusters keep what they show).
    pub clusters: Option<&'a Decoded>,
    /// The latest listing attempt succeeded (so removals may be trusted).
    pub listing_is_current: bool,
    /// Why the data may be out of date (the latest attempt failed).
    pub stale: Option<&'a Staleness>,
    /// The workspace's mirrors by cluster ID.
    pub existing: &'a HashMap<String, Arc<CachedMirror>>,
    /// Mirror names another workspace's mirror holds, with that workspace (a snapshot taken
    /// before planning: the plan reads no live cache).
    pub held_elsewhere: &'a HashMap<String, String>,
    /// Mirrors whose last write was refused: planned last.
    pub refused: &'a HashSet<String>,
    /// The instances of unhealthy clusters (`GetRayCluster`).
    pub diagnoses: &'a Diagnoses,
    /// The mirrors' whole statuses by cluster ID, read from the API server for a plan that named
    /// mirrors in [`Plan::missing`] (`None`: not read; the cache's [`SeenStatus`] serves).
    pub statuses: Option<&'a HashMap<String, EmrRayClusterStatus>>,
    pub now: &'a Time,
}

/// A mirror's status as the plan knows it: whole (read for this plan) or as the cache keeps it.
#[derive(Clone, Copy)]
enum Shown<'a> {
    Whole(&'a EmrRayClusterStatus),
    Seen(&'a SeenStatus),
}

impl<'a> Shown<'a> {
    /// What `m` shows: its whole status when `input` holds it.
    fn of(input: &Input<'a>, id: &str, m: &'a CachedMirror) -> Option<Self> {
        match input.statuses.and_then(|s| s.get(id)) {
            Some(s) => Some(Shown::Whole(s)),
            None => m.status.as_ref().map(Shown::Seen),
        }
    }

    fn state(&self) -> Option<&'a str> {
        match self {
            Shown::Whole(s) => s.state.as_deref(),
            Shown::Seen(s) => s.state.as_deref(),
        }
    }

    fn gone(&self) -> bool {
        match self {
            Shown::Whole(s) => s.gone,
            Shown::Seen(s) => s.gone,
        }
    }

    fn conditions(&self) -> Vec<crate::api::Condition> {
        match self {
            Shown::Whole(s) => s.conditions.clone(),
            Shown::Seen(s) => s.conditions(),
        }
    }

    /// Whether it already is `desired`.
    fn is(&self, desired: &EmrRayClusterStatus) -> bool {
        match self {
            Shown::Whole(s) => *s == desired,
            Shown::Seen(s) => s.digest == status_digest(desired),
        }
    }
}

/// Decides the writes of one sync. Pure.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut out = Plan::default();
    // Two remote IDs may map to one object name (`Ray_1` and a hostile `ray-1-<its hash>`): the
    // first (in ID order) keeps it, the others are reported, never written over it.
    let mut names: HashMap<String, String> = HashMap::new();
    if let Some(listing) = input.listing {
        for (id, state) in listing.states() {
            out.mirrors += 1;
            let prev = input.existing.get(id).cloned();
            let name = prev
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| mirror::mirror_name(id));
            if let Some(first) = names.get(&name) {
                out.mirrors -= 1;
                out.conflicts.push(Conflict {
                    name,
                    owner: format!("this workspace's cluster {first}, not {id}"),
                });
                continue;
            }
            names.insert(name.clone(), id.clone());
            if prev.is_none()
                && let Some(owner) = input.held_elsewhere.get(&name).cloned()
            {
                out.mirrors -= 1;
                out.conflicts.push(Conflict { name, owner });
                continue;
            }
            let cluster = input.clusters.and_then(|c| c.get(id));
            if cluster.is_none()
                && let Some(m) = &prev
            {
                // Not decoded in this reconcile (its listing failed): the mirror keeps what it
                // shows, only its conditions change.
                let keep = keep(input, m, id, Remote::MaybeListed, input.stale, &mut out);
                out.actions.extend(keep);
                continue;
            }
            let shown = input.existing.get(id).and_then(|p| Shown::of(input, id, p));
            let mut desired = match cluster {
                Some(c) => mirror::remote_status(c),
                // Deleted meanwhile: created again from what the listing kept.
                None => mirror::remote_status(&RayCluster {
                    cluster_id: id.clone(),
                    state: state.cloned(),
                    ..Default::default()
                }),
            };
            desired.instances = match input.diagnoses.view(id) {
                View::Fetched(i) => i.to_vec(),
                // A failed fetch (or none yet in this process) never blanks what a mirror shows.
                View::Keep => match shown {
                    Some(Shown::Whole(s)) => s.instances.clone(),
                    Some(Shown::Seen(s)) if s.has_instances => {
                        // The instances it shows are needed whole.
                        out.missing.push(id.clone());
                        continue;
                    }
                    _ => Vec::new(),
                },
                View::Drop => Vec::new(),
            };
            let generation = prev.as_ref().and_then(|p| p.generation).or(Some(1));
            let prev_conds = shown.map(|s| s.conditions()).unwrap_or_default();
            desired.observed_generation = generation;
            desired.conditions = mirror::mirror_conditions(
                &desired,
                &prev_conds,
                generation,
                input.stale,
                *input.now,
            );
            out.actions
                .extend(write_for(input.owner, name, id, prev, shown, desired));
        }
    }
    plan_unlisted(input, &mut out);
    let churn = out
        .actions
        .iter()
        .filter(|a| a.prev.is_none() || a.write == Write::Delete)
        .count();
    out.summarize_events = churn > MAX_MIRROR_EVENTS_PER_SYNC;
    // Stable order: by name, with mirrors whose last write was refused last.
    out.actions.sort_by(|a, b| {
        (input.refused.contains(&a.name), &a.name).cmp(&(input.refused.contains(&b.name), &b.name))
    });
    out.conflicts.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What the last listing says of a mirror whose cluster it does not contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unlisted {
    /// A complete, current listing: the cluster is gone.
    Gone,
    /// A current listing that ended on a page boundary: it may have been cut short.
    Unconfirmed,
    /// No trustworthy listing: nothing is known.
    NoListing,
}

/// Whether a kept mirror's remote cluster is known to be gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Remote {
    Gone,
    MaybeListed,
}

/// Mirrors whose cluster the last listing does not contain: deleted or marked gone only after a
/// complete, current listing; otherwise kept with their data and marked.
fn plan_unlisted(input: &Input<'_>, out: &mut Plan) {
    let unconfirmed = Staleness::removal_unconfirmed();
    for (id, m) in input.existing {
        if input.listing.is_some_and(|l| l.contains(id)) {
            continue;
        }
        let unlisted = if !input.listing_is_current {
            Unlisted::NoListing
        } else if input.listing.is_some_and(|l| l.on_page_boundary) {
            Unlisted::Unconfirmed
        } else {
            Unlisted::Gone
        };
        match unlisted {
            Unlisted::Gone if input.owner.policy == GoneClusterPolicy::Delete => {
                out.actions.push(Action {
                    name: m.name.clone(),
                    cluster_id: id.clone(),
                    prev: Some(m.clone()),
                    write: Write::Delete,
                    event: Some(MirrorEvent::Deleted),
                });
            }
            Unlisted::Gone => {
                out.mirrors += 1;
                let keep = keep(input, m, id, Remote::Gone, None, out);
                out.actions.extend(keep);
            }
            Unlisted::Unconfirmed => {
                out.mirrors += 1;
                let keep = keep(input, m, id, Remote::MaybeListed, Some(&unconfirmed), out);
                out.actions.extend(keep);
            }
            // Keep the last known data, only say it is stale.
            Unlisted::NoListing => {
                out.mirrors += 1;
                let keep = keep(input, m, id, Remote::MaybeListed, input.stale, out);
                out.actions.extend(keep);
            }
        }
    }
}

/// Keeps a mirror's last known data, with conditions saying whether it is gone or stale. The
/// data is needed whole: a mirror with a status `input` does not hold is named in
/// `out.missing` instead.
fn keep(
    input: &Input<'_>,
    m: &Arc<CachedMirror>,
    id: &str,
    remote: Remote,
    stale: Option<&Staleness>,
    out: &mut Plan,
) -> Option<Action> {
    let shown = Shown::of(input, id, m);
    let mut desired = match shown {
        Some(Shown::Whole(s)) => s.clone(),
        Some(Shown::Seen(_)) => {
            out.missing.push(id.to_string());
            return None;
        }
        None => EmrRayClusterStatus::default(),
    };
    desired.gone = desired.gone || remote == Remote::Gone;
    let prev_conds = std::mem::take(&mut desired.conditions);
    desired.conditions =
        mirror::mirror_conditions(&desired, &prev_conds, m.generation, stale, *input.now);
    write_for(
        input.owner,
        m.name.clone(),
        id,
        Some(m.clone()),
        shown,
        desired,
    )
}

/// The write (if any) that turns `prev` (whose status is `shown`) into a mirror with `desired`
/// status.
fn write_for(
    owner: &Owner,
    name: String,
    id: &str,
    prev: Option<Arc<CachedMirror>>,
    shown: Option<Shown<'_>>,
    desired: EmrRayClusterStatus,
) -> Option<Action> {
    let meta_ok = prev.as_ref().is_some_and(|p| owner.metadata_matches(p, id));
    let status_ok = shown.is_some_and(|s| s.is(&desired));
    let event = match shown {
        None if prev.is_none() => Some(MirrorEvent::Created {
            state: desired.state.clone(),
        }),
        Some(p) if p.state() != desired.state.as_deref() => Some(MirrorEvent::StateChanged {
            from: p.state().map(str::to_string),
            to: desired.state.clone(),
            // The failing instance when the instances name one (`head: OOMKilled, exit 137`).
            message: super::diagnose::failing_summary(&desired.instances)
                .or_else(|| desired.message.clone()),
        }),
        Some(p) if !p.gone() && desired.gone => Some(MirrorEvent::Gone),
        _ => None,
    };
    let write = match (meta_ok, status_ok) {
        (true, true) => return None,
        (false, true) => Write::Metadata,
        (false, false) => Write::Apply(desired),
        (true, false) => Write::Status(desired),
    };
    Some(Action {
        name,
        cluster_id: id.to_string(),
        prev,
        write,
        event,
    })
}

#[cfg(test)]
mod tests;
