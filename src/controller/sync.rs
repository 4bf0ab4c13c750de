//! One sync of a workspace, as the reconciler runs it: the remote listing (on its own
//! schedule) and the mirror write pass (on the workspace's write backoff), with the Events
//! that announce failures and recoveries.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::apply::{self, WriteReport, Writer, publish};
use super::cache::CachedMirror;
use super::mirror::Staleness;
use super::state::{Failure, Listing, Settled, WorkspaceState, WriteTrouble};
use super::{Context, SyncError, credentials, jitter, key, labels, plan};
use crate::api::{
    EmrRayCluster, EmrWorkspace, EndpointNetwork, Interval, LABEL_MANAGED_BY, LABEL_SHARD,
    LABEL_WORKSPACE, MANAGED_BY, Reason, WriteRefusal,
};
use crate::emr::EmrError;
use crate::metrics::FailureLabels;
use crate::time::now_rfc3339;

/// One remote listing: updates the listing or the failure; after a failure, schedules the
/// retry (after a success, `sync` schedules the next listing once the writes are done).
pub(super) async fn list_remote(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    interval: Interval,
) {
    let labels = labels(ws);
    ctx.metrics.sync_attempts.get_or_create(&labels).inc();
    st.last_attempt = Some(now_rfc3339());
    match list_workspace(ws, ctx).await {
        Ok((listing, queue_outcome, jobs)) => {
            if let Some((retention, result)) = jobs {
                if let Err(e) = &result {
                    let reason = e.reason();
                    warn!(workspace = %key(ws), %reason, error = %e, "remote job listing failed");
                }
                super::jobs::record(st, retention, result, &now_rfc3339());
            }
            let now = now_rfc3339();
            match super::queues::record(st, queue_outcome, &now) {
                (Some(message), _) => {
                    warn!(workspace = %key(ws), "{message}");
                    publish(
                        &ctx.recorder,
                        &ws.object_ref(&()),
                        EventType::Warning,
                        "QueueListingFailed",
                        format!("{message}; status.queues keeps the last complete listing"),
                    )
                    .await;
                }
                (None, true) => {
                    publish(
                        &ctx.recorder,
                        &ws.object_ref(&()),
                        EventType::Normal,
                        "QueueListingRecovered",
                        "listing the workspace's queues succeeded again".to_string(),
                    )
                    .await;
                }
                (None, false) => {}
            }
            if let Some(prev) = st.failure.take() {
                publish(
                    &ctx.recorder,
                    &ws.object_ref(&()),
                    EventType::Normal,
                    "SyncRecovered",
                    format!(
                        "listing succeeded again after {} failed attempt(s) ({})",
                        prev.consecutive, prev.reason
                    ),
                )
                .await;
            }
            // An unchanged listing keeps its `Arc`: a settled workspace skips planning.
            if st.listing.as_deref() != Some(&listing) {
                st.listing = Some(Arc::new(listing));
            }
            st.last_success = Some(now_rfc3339());
            ctx.metrics
                .last_success
                .get_or_create(&labels)
                .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
        }
        Err(e) => {
            let reason = e.reason();
            ctx.metrics
                .sync_failures
                .get_or_create(&FailureLabels {
                    namespace: labels.namespace.clone(),
                    workspace: labels.workspace.clone(),
                    reason: reason.metric_label().to_string(),
                })
                .inc();
            let failure = Failure::next(
                st.failure.as_ref(),
                reason,
                e.to_string(),
                e.remote().and_then(|r| r.code.clone()),
                e.remote().and_then(|r| r.request_id.clone()),
                &now_rfc3339(),
            );
            if st.failure.as_ref().map(|f| f.reason) != Some(reason) {
                publish(
                    &ctx.recorder,
                    &ws.object_ref(&()),
                    EventType::Warning,
                    "SyncFailed",
                    failure.message.clone(),
                )
                .await;
            }
            warn!(workspace = %key(ws), %reason, error = %e, "remote listing failed");
            let n = failure.consecutive.clamp(1, 16) as u32;
            st.failure = Some(failure);
            let backoff = Duration::from_secs(5)
                .saturating_mul(1 << (n - 1))
                .min(interval.as_duration());
            let backoff = match e.remote().and_then(|r| r.retry_after) {
                Some(ra) => ra.max(Duration::from_secs(1)),
                None => backoff,
            };
            st.next_due = Instant::now().checked_add(jitter(backoff, 0.2));
        }
    }
}

/// Fetches the instances of the workspace's unhealthy clusters whose details are due
/// (`diagnose`: once per listed form of a cluster, failures retried after a backoff), within
/// the namespace's share of the remote request budget. After a failed listing nothing is
/// fetched: the listing's retry comes first.
pub(super) async fn diagnose(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    interval: Interval,
) {
    let Some(listing) = st.listing.clone().filter(|_| st.failure.is_none()) else {
        return;
    };
    let due = st
        .diagnoses
        .observe(&listing, Instant::now(), ctx.settings.stuck_cluster_after);
    if due.is_empty() {
        return;
    }
    let cap = interval.as_duration();
    let access = remote_access(ws, ctx).await;
    let ns = ws.namespace().unwrap_or_default();
    for id in due {
        let Some(listed) = st.diagnoses.listed(&id) else {
            continue;
        };
        let result = match &access {
            Ok((endpoint, creds)) => ctx
                .emr
                .get_ray_cluster_within(Some(&ns), endpoint, &ws.spec.workspace_id, &id, creds)
                .await
                .map_err(SyncError::from),
            Err(e) => Err(SyncError::local(e.reason(), e.to_string())),
        };
        let recorded = match result {
            Ok(detail) => {
                debug!(workspace = %key(ws), cluster = %id, instances = detail.instances.as_ref().map_or(0, Vec::len), "fetched the instances of an unhealthy cluster");
                Ok(detail
                    .instances
                    .unwrap_or_default()
                    .iter()
                    .map(super::diagnose::instance_status)
                    .collect())
            }
            Err(e) => {
                // Only the error's reason and cleaned message: never a body.
                warn!(workspace = %key(ws), cluster = %id, reason = %e.reason(), error = %e, "GetRayCluster failed; the mirror keeps its instances and the call is retried after a backoff");
                Err(e.remote().and_then(|r| r.retry_after))
            }
        };
        st.diagnoses
            .record(&id, listed, recorded, Instant::now(), cap);
    }
}

/// The endpoint (checked against the allowed ones before any credential is read) and the
/// workspace's credentials.
async fn remote_access(
    ws: &EmrWorkspace,
    ctx: &Context,
) -> Result<(url::Url, crate::emr::Credentials), SyncError> {
    let endpoint = crate::emr::endpoint::resolve(
        &ws.spec.region_id,
        ws.spec.network == EndpointNetwork::Vpc,
        ws.spec.endpoint.as_deref(),
    )?;
    // Before any credential is read: a disallowed endpoint never receives one.
    if !ctx.settings.endpoints.allows(&endpoint) {
        return Err(SyncError::local(
            Reason::EndpointNotAllowed,
            format!(
                "endpoint {endpoint} is not allowed by the operator (allowed: {}); a cluster \
                 admin adds endpoints with --allowed-endpoints",
                crate::emr::endpoint::EndpointPattern::list(ctx.settings.endpoints.patterns())
            ),
        ));
    }
    let credentials =
        credentials::for_workspace(ws, &endpoint, &ctx.client, &ctx.credentials, &ctx.recorder)
            .await?;
    Ok((endpoint, credentials))
}

/// Checks the endpoint, resolves the credentials, then lists the workspace within its
/// namespace's share of the listing slots and of the remote request budget; after a complete
/// cluster listing, its queues (whose failure does not fail the sync: see `queues`).
/// The queue listing of a round: the queues or why listing them failed.
type QueueRound = Result<Vec<crate::emr::WorkspaceQueue>, SyncError>;
/// The job listing of a round (`spec.jobs.enabled`): the retention and the listing or why it
/// failed.
type JobRound = Option<(Interval, super::jobs::JobResult)>;

async fn list_workspace(
    ws: &EmrWorkspace,
    ctx: &Context,
) -> Result<(Listing, QueueRound, JobRound), SyncError> {
    let (endpoint, credentials) = remote_access(ws, ctx).await?;
    let ns = ws.namespace().unwrap_or_default();
    let timeout = ctx
        .settings
        .listing_timeout
        .saturating_add(Duration::from_secs(5));
    let listing = tokio::time::timeout(
        timeout,
        ctx.emr
            .list_ray_clusters_within(Some(&ns), &endpoint, &ws.spec.workspace_id, &credentials),
    )
    .await
    .map_err(|_| {
        EmrError::new(
            crate::emr::ErrorKind::Timeout,
            format!(
                "listing did not finish within {}s",
                ctx.settings.listing_timeout.as_secs()
            ),
        )
    })??;
    debug!(workspace = %key(ws), clusters = listing.clusters.len(), requests = listing.requests, "listed");
    let queues = tokio::time::timeout(
        timeout,
        ctx.emr.list_workspace_queues_within(
            Some(&ns),
            &endpoint,
            &ws.spec.workspace_id,
            &credentials,
        ),
    )
    .await
    .map_err(|_| {
        SyncError::from(EmrError::new(
            crate::emr::ErrorKind::Timeout,
            format!(
                "listing the queues did not finish within {}s",
                ctx.settings.listing_timeout.as_secs()
            ),
        ))
    })
    .and_then(|r| r.map(|l| l.queues).map_err(SyncError::from));
    let page = ctx.emr.config().page_size.max(1) as usize;
    let jobs = match ws.spec.jobs_enabled() {
        None => None,
        Some(spec) => Some(match spec.retention() {
            Err(e) => (
                crate::api::Interval::from_secs(0),
                Err(SyncError::local(
                    Reason::InvalidSpec,
                    format!("jobs.retention: {e}"),
                )),
            ),
            Ok(retention) => {
                let window = crate::emr::SubmitWindow::last(
                    retention.as_duration(),
                    jiff::Timestamp::now().as_millisecond(),
                );
                let listed = tokio::time::timeout(
                    timeout,
                    ctx.emr.list_ray_jobs(
                        Some(&ns),
                        &endpoint,
                        &ws.spec.workspace_id,
                        &credentials,
                        window,
                        ctx.settings.max_jobs_per_workspace,
                    ),
                )
                .await
                .map_err(|_| {
                    EmrError::new(
                        crate::emr::ErrorKind::Timeout,
                        format!(
                            "job listing did not finish within {}s",
                            ctx.settings.listing_timeout.as_secs()
                        ),
                    )
                })
                .and_then(|r| r)
                .map_err(SyncError::from);
                if let Ok(l) = &listed {
                    debug!(workspace = %key(ws), jobs = l.jobs.len(), requests = l.requests, "listed jobs");
                }
                (retention, listed)
            }
        }),
    };
    Ok((Listing::new(listing.clusters, page), queues, jobs))
}

/// Plans and performs the mirror writes, and records what the API server refused.
pub(super) async fn write_mirrors(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    backoff_cap: Duration,
) {
    let Ok(shard) = super::mirror_shard(ctx, ws) else {
        // Its namespace just left this shard: the new one writes the mirrors.
        return;
    };
    let owner = plan::Owner::of(ws, shard);
    let mut existing = ctx.mirrors.current(&owner.namespace, &owner.uid);
    // A workspace whose namespace just moved into this shard: its mirrors still labelled for
    // another shard are invisible to the mirror watch. Take them into the plan once (they are
    // relabelled — not created again — and gone ones are deleted or kept like any other).
    let sharded = ctx.settings.shard.is_some();
    let adopting = sharded && !st.adopted;
    let mut adopted = false;
    if adopting {
        match mirrors_of_other_shards(ctx, &owner).await {
            Ok(found) => {
                adopted = true;
                if !found.is_empty() {
                    debug!(workspace = %key(ws), mirrors = found.len(), "taking over mirrors labelled for another shard");
                }
                for m in found {
                    existing.entry(m.cluster_id.clone()).or_insert(m);
                }
            }
            Err(e) => {
                warn!(workspace = %key(ws), error = %e, "listing the workspace's mirrors of other shards failed; retrying on the next pass")
            }
        }
    }
    // Mirrors left without an owner by a workspace of this name deleted with
    // `--cascade=orphan`: this one takes them over (kept, relabelled or deleted by the plan like
    // its own).
    let orphans = ctx
        .mirrors
        .store()
        .orphans(Some((&owner.namespace, &owner.name)));
    let adopting = adopting || !orphans.is_empty();
    for m in orphans {
        existing.entry(m.cluster_id.clone()).or_insert(m);
    }
    let stale = st
        .failure
        .as_ref()
        .map(|f| Staleness::from_failure(f.reason, f.code.as_deref(), st.last_success.as_deref()));
    // What the plan reads of the diagnoses changes their generation.
    let inputs = plan_inputs(&owner, &existing).wrapping_add(st.diagnoses.generation());
    let clean = !adopting && stale.is_none() && st.write_trouble.is_none();
    if clean && Settled::covers(st.settled.as_ref(), st.listing.as_ref(), inputs) {
        return;
    }
    st.settled = None;
    // A shard's cache lacks other shards' mirrors: names it would create are asked for.
    let held_in_other_shards = if sharded {
        names_held_in_other_shards(ctx, &owner, st.listing.as_deref(), &existing).await
    } else {
        HashMap::new()
    };
    let held_elsewhere = |name: &str| {
        ctx.mirrors
            .get(&owner.namespace, name)
            .filter(|m| m.controller_uid.as_ref().is_some_and(|u| *u != owner.uid))
            .map(|m| m.workspace_ref.clone())
            .or_else(|| held_in_other_shards.get(name).cloned())
    };
    let refused = st
        .write_trouble
        .as_ref()
        .map(|t| t.refused.clone())
        .unwrap_or_default();
    let now = now_rfc3339();
    let plan = plan::plan(&plan::Input {
        owner: &owner,
        listing: st.listing.as_deref(),
        listing_is_current: st.listing_is_current(),
        stale: stale.as_ref(),
        existing: &existing,
        held_elsewhere: &held_elsewhere,
        refused: &refused,
        diagnoses: &st.diagnoses,
        now: &now,
    });
    let workspace = ws.object_ref(&());
    report_conflicts(ctx, ws, &plan.conflicts).await;
    if plan.actions.is_empty() {
        st.write_trouble = None;
        st.adopted |= adopted;
        if clean && plan.conflicts.is_empty() {
            st.settled = st
                .listing
                .clone()
                .map(|listing| Settled { listing, inputs });
        }
        return;
    }
    let writer = Writer {
        api: Api::namespaced(ctx.client.clone(), &owner.namespace),
        owner: &owner,
        workspace: workspace.clone(),
        cache: &ctx.mirrors,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
        limiter: &ctx.write_limiter,
        now: &now,
    };
    let probe = st.write_trouble.is_some();
    let report = apply::apply_plan(&writer, plan, probe).await;
    let before = st.write_trouble.as_ref().map(|t| t.refusal);
    st.write_trouble = next_write_trouble(st.write_trouble.take(), report, &now, backoff_cap);
    // Until every write went through, the mirrors of other shards are looked up again.
    st.adopted |= adopted && st.write_trouble.is_none();
    report_write_trouble(ctx, &workspace, before, st.write_trouble.as_ref()).await;
}

/// A digest of a plan's inputs besides the listing: the owner and each mirror's name, cluster
/// and version (in any order).
fn plan_inputs(owner: &plan::Owner, existing: &HashMap<String, Arc<CachedMirror>>) -> u64 {
    let digest = |v: &dyn Fn(&mut DefaultHasher)| {
        let mut h = DefaultHasher::new();
        v(&mut h);
        h.finish()
    };
    existing
        .values()
        .fold(digest(&|h| owner.hash(h)), |acc, m| {
            acc.wrapping_add(digest(&|h| {
                (&m.name, &m.cluster_id, &m.resource_version).hash(h)
            }))
        })
}

/// The workspace's mirrors labelled for another shard (or for none, in a shard), which the
/// mirror watch of this shard does not show. Served from the API server's watch cache.
async fn mirrors_of_other_shards(
    ctx: &Context,
    owner: &plan::Owner,
) -> Result<Vec<Arc<CachedMirror>>, kube::Error> {
    let not_ours = match &owner.shard {
        Some(shard) => format!("{LABEL_SHARD}!={shard}"),
        None => LABEL_SHARD.to_string(),
    };
    let selector = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORKSPACE}={},{not_ours}",
        super::mirror::label_value(&owner.name)
    );
    let api: Api<EmrRayCluster> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let list = api
        .list(&ListParams::default().labels(&selector).match_any())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|m| {
            let controller = m
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true));
            // Its own, or left without an owner by a workspace of this name.
            controller.is_none_or(|o| o.uid == owner.uid)
        })
        .map(|m| Arc::new(CachedMirror::of(&m)))
        .collect())
}

/// Of the mirrors this sync would create, those whose name another workspace's mirror holds
/// (by name, with that workspace): one metadata LIST by name per creation (served from the API
/// server's watch cache; the operator may list, not get, mirrors), in sharded replicas only.
async fn names_held_in_other_shards(
    ctx: &Context,
    owner: &plan::Owner,
    listing: Option<&Listing>,
    existing: &HashMap<String, Arc<CachedMirror>>,
) -> HashMap<String, String> {
    let Some(listing) = listing else {
        return HashMap::new();
    };
    let api: Api<EmrRayCluster> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut held = HashMap::new();
    for id in listing.ids().filter(|id| !existing.contains_key(*id)) {
        let name = super::mirror::mirror_name(id);
        let by_name = ListParams::default()
            .fields(&format!("metadata.name={name}"))
            .match_any();
        match api.list_metadata(&by_name).await {
            Ok(list) => {
                let holder = list.items.iter().find_map(|m| {
                    m.owner_references()
                        .iter()
                        .find(|o| o.controller == Some(true) && o.uid != owner.uid)
                        .map(|o| o.name.clone())
                });
                if let Some(holder) = holder {
                    held.insert(name, holder);
                }
            }
            Err(e) => debug!(mirror = %name, error = %e, "checking a mirror name failed"),
        }
    }
    held
}

/// The write trouble after a pass: `None` when nothing was refused; otherwise the refusal, with
/// a backoff that grows with each consecutive refused pass.
pub(super) fn next_write_trouble(
    prev: Option<WriteTrouble>,
    report: WriteReport,
    now: &str,
    cap: Duration,
) -> Option<WriteTrouble> {
    let first = report.first?;
    // Planned last next time: the mirrors refused now, and those refused before that were not
    // tried now. Mirrors only skipped go first: they may well be accepted.
    let mut refused = report.refused;
    if let Some(p) = &prev {
        refused.extend(p.refused.intersection(&report.skipped).cloned());
    }
    let consecutive = prev.as_ref().map_or(1, |p| p.consecutive.saturating_add(1));
    let since = match &prev {
        Some(p) if p.refusal == first.refusal => p.since.clone(),
        _ => now.to_string(),
    };
    let wait = WriteTrouble::backoff(consecutive, cap, first.retry_after);
    Some(WriteTrouble {
        refusal: first.refusal,
        message: first.message,
        mirrors: report.mirrors,
        failed: report.failed,
        since,
        consecutive,
        retry_at: Instant::now()
            .checked_add(jitter(wait, 0.1))
            .unwrap_or_else(Instant::now),
        refused,
    })
}

/// Mirror names held by another workspace's mirror: a Warning Event and a log line.
async fn report_conflicts(ctx: &Context, ws: &EmrWorkspace, conflicts: &[plan::Conflict]) {
    if conflicts.is_empty() {
        return;
    }
    let names: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{} (owned by {})", c.name, c.owner))
        .collect();
    warn!(workspace = %key(ws), conflicts = ?names, "mirror names held by another workspace");
    publish(
        &ctx.recorder,
        &ws.object_ref(&()),
        EventType::Warning,
        Reason::MirrorNameConflict.as_str(),
        format!(
            "{} cluster(s) are already mirrored by another EmrWorkspace in this namespace \
             (the same remote workspace twice?): {}",
            names.len(),
            names.join(", ")
        ),
    )
    .await;
}

/// One Warning Event when writes start being refused (or for another reason), one Normal
/// Event when they are all accepted again.
async fn report_write_trouble(
    ctx: &Context,
    workspace: &ObjectReference,
    before: Option<WriteRefusal>,
    now: Option<&WriteTrouble>,
) {
    match (now, before) {
        (Some(t), prev) if prev != Some(t.refusal) => {
            publish(
                &ctx.recorder,
                workspace,
                EventType::Warning,
                Reason::MirrorWriteFailed.as_str(),
                format!(
                    "{} of {} mirrors not written ({}): {}",
                    t.failed, t.mirrors, t.refusal, t.message
                ),
            )
            .await;
        }
        (None, Some(prev)) => {
            publish(
                &ctx.recorder,
                workspace,
                EventType::Normal,
                "MirrorWritesRecovered",
                format!("every mirror is written again (after {prev} refusals)"),
            )
            .await;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apply::Refused;

    fn report(refusal: Option<WriteRefusal>) -> WriteReport {
        WriteReport {
            mirrors: 10,
            failed: usize::from(refusal.is_some()) * 10,
            first: refusal.map(|refusal| Refused {
                refusal,
                message: "no".into(),
                retry_after: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn write_trouble_grows_and_clears() {
        let cap = Duration::from_secs(300);
        assert_eq!(next_write_trouble(None, report(None), "t0", cap), None);
        let t1 =
            next_write_trouble(None, report(Some(WriteRefusal::Forbidden)), "t1", cap).unwrap();
        assert_eq!((t1.consecutive, t1.since.as_str()), (1, "t1"));
        let t2 =
            next_write_trouble(Some(t1), report(Some(WriteRefusal::Forbidden)), "t2", cap).unwrap();
        assert_eq!((t2.consecutive, t2.since.as_str()), (2, "t1"));
        assert!(t2.retry_at > Instant::now() + Duration::from_secs(9));
        assert_eq!(next_write_trouble(Some(t2), report(None), "t3", cap), None);
    }
}
