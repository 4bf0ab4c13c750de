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
//!   shows; a healthy cluster's mirror shows none (`diagnose`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use super::cache::{CachedMirror, shape_digest};
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
    pub now: &'a Time,
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
                let keep = keep(
                    input.owner,
                    m,
                    id,
                    Remote::MaybeListed,
                    input.stale,
                    input.now,
                );
                out.actions.extend(keep);
                continue;
            }
            let prev_status = prev.as_ref().and_then(|p| p.status());
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
                View::Keep => prev_status
                    .as_ref()
                    .map(|s| s.instances.clone())
                    .unwrap_or_default(),
                View::Drop => Vec::new(),
            };
            let generation = prev.as_ref().and_then(|p| p.generation).or(Some(1));
            let prev_conds = prev_status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            desired.observed_generation = generation;
            desired.conditions = mirror::mirror_conditions(
                &desired,
                prev_conds,
                generation,
                input.stale,
                *input.now,
            );
            out.actions
                .extend(write_for(input.owner, name, id, prev, prev_status, desired));
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
                out.actions
                    .extend(keep(input.owner, m, id, Remote::Gone, None, input.now));
            }
            Unlisted::Unconfirmed => {
                out.mirrors += 1;
                out.actions.extend(keep(
                    input.owner,
                    m,
                    id,
                    Remote::MaybeListed,
                    Some(&unconfirmed),
                    input.now,
                ));
            }
            // Keep the last known data, only say it is stale.
            Unlisted::NoListing => {
                out.mirrors += 1;
                out.actions.extend(keep(
                    input.owner,
                    m,
                    id,
                    Remote::MaybeListed,
                    input.stale,
                    input.now,
                ));
            }
        }
    }
}

/// Keeps a mirror's last known data, with conditions saying whether it is gone or stale.
fn keep(
    owner: &Owner,
    m: &Arc<CachedMirror>,
    id: &str,
    remote: Remote,
    stale: Option<&Staleness>,
    now: &Time,
) -> Option<Action> {
    let prev_status = m.status();
    let mut desired = prev_status.clone().unwrap_or_default();
    desired.gone = desired.gone || remote == Remote::Gone;
    let prev_conds = std::mem::take(&mut desired.conditions);
    desired.conditions =
        mirror::mirror_conditions(&desired, &prev_conds, m.generation, stale, *now);
    write_for(
        owner,
        m.name.clone(),
        id,
        Some(m.clone()),
        prev_status,
        desired,
    )
}

/// The write (if any) that turns `prev` (whose status is `prev_status`) into a mirror with
/// `desired` status.
fn write_for(
    owner: &Owner,
    name: String,
    id: &str,
    prev: Option<Arc<CachedMirror>>,
    prev_status: Option<EmrRayClusterStatus>,
    desired: EmrRayClusterStatus,
) -> Option<Action> {
    let prev_status = prev_status.as_ref();
    let meta_ok = prev.as_ref().is_some_and(|p| owner.metadata_matches(p, id));
    let status_ok = prev_status == Some(&desired);
    let event = match prev_status {
        None if prev.is_none() => Some(MirrorEvent::Created {
            state: desired.state.clone(),
        }),
        Some(p) if p.state != desired.state => Some(MirrorEvent::StateChanged {
            from: p.state.clone(),
            to: desired.state.clone(),
            // The failing instance when the instances name one (`head: OOMKilled, exit 137`).
            message: super::diagnose::failing_summary(&desired.instances)
                .or_else(|| desired.message.clone()),
        }),
        Some(p) if !p.gone && desired.gone => Some(MirrorEvent::Gone),
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
