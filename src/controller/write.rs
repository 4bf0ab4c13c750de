//! Steps 5 and 6 of a reconcile: the mirror writes ([`super::plan`] decides them,
//! [`super::apply`] performs them) with what the API server refused, and the status write.

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
use super::context::{Context, labels};
use super::error::Error;
use super::lifecycle::mirror_shard;
use super::mirror::Staleness;
use super::state::{Decoded, Listing, Settled, WorkspaceState, WriteTrouble};
use super::{decide, plan, status};
use crate::api::EventReason;
use crate::api::{
    EmrRayCluster, EmrRayClusterStatus, EmrWorkspace, EndpointNetwork, LABEL_MANAGED_BY,
    LABEL_SHARD, LABEL_WORKSPACE, MANAGED_BY, Reason, WriteRefusal,
};

/// Whether the workspace's mirrors are as the last settled plan left them, so that no plan is
/// needed (and no decoded listing): nothing failing or refused, nothing to take over, the same
/// listing and the same mirrors. `listing_now`: the workspace is listed on its schedule in this
/// reconcile. Reads only the caches.
pub(super) fn is_settled(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &WorkspaceState,
    listing_now: bool,
) -> bool {
    let Ok(shard) = mirror_shard(ctx, ws) else {
        // Its namespace just left this shard: nothing to plan here.
        return true;
    };
    if st.settled.is_none() || st.failure.is_some() || st.write_trouble.is_some() {
        return false;
    }
    let owner = plan::Owner::of(ws, shard);
    let cached = cached_mirrors(ctx, st, &owner);
    let inputs = settle_inputs(&owner, &cached.mirrors, st, None);
    !cached.adopting
        && Settled::covers(
            st.settled.as_ref(),
            st.listing.as_ref(),
            inputs,
            listing_now,
        )
}

/// Plans and performs the mirror writes, and records what the API server refused. `clusters`:
/// the listing's clusters when it was decoded in this reconcile. Returns whether a plan is
/// needed that needs them and they are not here: then a listing must come first (`sync`
/// schedules it), and nothing was planned.
pub(super) async fn write_mirrors(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    (backoff_cap, jitter): (Duration, f64),
    clusters: Option<&Decoded>,
) -> bool {
    let Ok(shard) = mirror_shard(ctx, ws) else {
        // Its namespace just left this shard: the new one writes the mirrors.
        return false;
    };
    let owner = plan::Owner::of(ws, shard);
    let Existing {
        mirrors: mut existing,
        adopting,
    } = cached_mirrors(ctx, st, &owner);
    let stale = staleness(st);
    let inputs = settle_inputs(&owner, &existing, st, stale.as_ref());
    let clean = !adopting && st.write_trouble.is_none();
    let listing_now = clusters.is_some();
    if clean
        && Settled::covers(
            st.settled.as_ref(),
            st.listing.as_ref(),
            inputs,
            listing_now,
        )
    {
        return false;
    }
    st.settled = None;
    if clusters.is_none() && st.failure.is_none() && st.listing.is_some() {
        // The listing succeeded but was not decoded in this reconcile: the desired statuses
        // need it decoded (a mirror edited or deleted by hand, say).
        return true;
    }
    let adopted = adopt_other_shards(ctx, st, &owner, &mut existing).await;
    let held_elsewhere = names_held_elsewhere(ctx, &owner, st.listing.as_deref(), &existing).await;
    let refused = st
        .write_trouble
        .as_ref()
        .map(|t| t.refused.clone())
        .unwrap_or_default();
    let now = crate::time::Time::now();
    let plan_with = |statuses| {
        plan::plan(&plan::Input {
            owner: &owner,
            listing: st.listing.as_deref(),
            clusters,
            listing_is_current: st.listing_is_current(),
            stale: stale.as_ref(),
            existing: &existing,
            held_elsewhere: &held_elsewhere,
            refused: &refused,
            diagnoses: &st.diagnoses,
            statuses,
            now: &now,
        })
    };
    let mut plan = plan_with(None);
    if !plan.missing.is_empty() {
        // Mirrors whose data must be kept as it is: the cache holds only a digest of their
        // status, so it is read, and the plan made again. Should the read fail, they keep what
        // they show until the next reconcile plans them again.
        let wanted: HashMap<String, String> = plan
            .missing
            .iter()
            .filter_map(|id| existing.get(id).map(|m| (id.clone(), m.name.clone())))
            .collect();
        match read_statuses(ctx, &owner, &wanted).await {
            Ok(statuses) => plan = plan_with(Some(&statuses)),
            Err(e) => warn!(
                mirrors = plan.missing.len(), error = %e,
                "reading the mirrors' statuses failed; they keep what they show for now"
            ),
        }
    }
    // Mirrors left unplanned: the plan is not settled.
    let complete = plan.missing.is_empty();
    let clean = clean && complete;
    let workspace = ws.object_ref(&());
    report_conflicts(ctx, ws, &plan.conflicts).await;
    let conflicts = !plan.conflicts.is_empty();
    if plan.actions.is_empty() {
        st.write_trouble = None;
        st.adopted |= adopted;
        if clean {
            st.settled = Some(Settled {
                listing: st.listing.clone(),
                inputs,
                conflicts,
            });
        }
        return false;
    }
    let writer = Writer {
        api: Api::namespaced(ctx.kube.client.clone(), &owner.namespace),
        owner: &owner,
        workspace: workspace.clone(),
        cache: &ctx.caches.mirrors,
        recorder: &ctx.kube.recorder,
        metrics: &ctx.metrics,
        limiter: &ctx.kube.write_limiter,
        now: &now,
    };
    let probe = st.write_trouble.is_some();
    let (report, written) = apply::apply_plan(&writer, plan, probe).await;
    let before = st.write_trouble.as_ref().map(|t| t.refusal);
    st.write_trouble = next_write_trouble(
        st.write_trouble.take(),
        report,
        (&now.to_string(), Instant::now()),
        backoff_cap,
        jitter,
    );
    // Until every write went through, the mirrors of other shards are looked up again.
    st.adopted |= adopted && st.write_trouble.is_none();
    if !adopting && complete && st.write_trouble.is_none() {
        // Every write went through: the mirrors are what the plan wanted, with the versions our
        // writes gave them. The watch showing those writes changes nothing; anything else
        // (someone's edit meanwhile included) does.
        for (id, m) in written {
            match m {
                Some(m) => existing.insert(id, m),
                None => existing.remove(&id),
            };
        }
        let inputs = settle_inputs(&owner, &existing, st, stale.as_ref());
        st.settled = Some(Settled {
            listing: st.listing.clone(),
            inputs,
            conflicts,
        });
    }
    report_write_trouble(ctx, &workspace, before, st.write_trouble.as_ref()).await;
    false
}

/// The mirrors a plan starts from, and whether it takes over mirrors it did not write.
struct Existing {
    /// By cluster ID.
    mirrors: HashMap<String, Arc<CachedMirror>>,
    /// Mirrors of another shard or left without an owner are taken into the plan.
    adopting: bool,
}

/// The workspace's mirrors as the cache has them, with those left without an owner by a
/// workspace of this name deleted with `--cascade=orphan` (taken over: kept, relabelled or
/// deleted by the plan like its own). In a shard, until the mirrors still labelled for another
/// shard were looked up once ([`adopt_other_shards`]), it is adopting too.
fn cached_mirrors(ctx: &Context, st: &WorkspaceState, owner: &plan::Owner) -> Existing {
    let mut mirrors = ctx.caches.mirrors.current(&owner.namespace, &owner.uid);
    let mut adopting = ctx.settings.shard.is_some() && !st.adopted;
    let orphans = ctx
        .caches
        .mirrors
        .store()
        .orphans(Some((&owner.namespace, &owner.name)));
    adopting |= !orphans.is_empty();
    for m in orphans {
        mirrors.entry(m.cluster_id.clone()).or_insert(m);
    }
    Existing { mirrors, adopting }
}

/// In a shard, once: takes into `mirrors` those still labelled for another shard (its namespace
/// just moved here: they are invisible to this shard's watch; they are relabelled, not created
/// again). Returns whether they were looked up.
async fn adopt_other_shards(
    ctx: &Context,
    st: &WorkspaceState,
    owner: &plan::Owner,
    mirrors: &mut HashMap<String, Arc<CachedMirror>>,
) -> bool {
    if ctx.settings.shard.is_none() || st.adopted {
        return false;
    }
    match mirrors_of_other_shards(ctx, owner).await {
        Ok(found) => {
            if !found.is_empty() {
                debug!(
                    mirrors = found.len(),
                    "taking over mirrors labelled for another shard"
                );
            }
            for m in found {
                mirrors.entry(m.cluster_id.clone()).or_insert(m);
            }
            true
        }
        Err(e) => {
            warn!(error = %e, "listing the workspace's mirrors of other shards failed; retrying on the next pass");
            false
        }
    }
}

/// The names this sync would create that another workspace's mirror holds, with that
/// workspace, as the cache has them now (a shard's cache lacks other shards' mirrors: those
/// names are asked for).
async fn names_held_elsewhere(
    ctx: &Context,
    owner: &plan::Owner,
    listing: Option<&Listing>,
    existing: &HashMap<String, Arc<CachedMirror>>,
) -> HashMap<String, String> {
    let mut held = if ctx.settings.shard.is_some() {
        names_held_in_other_shards(ctx, owner, listing, existing).await
    } else {
        HashMap::new()
    };
    for id in listing.iter().flat_map(|l| l.ids()) {
        if existing.contains_key(id) {
            continue;
        }
        let name = super::mirror::mirror_name(id);
        let holder = ctx
            .caches
            .mirrors
            .get(&owner.namespace, &name)
            .filter(|m| m.controller_uid.as_ref().is_some_and(|u| *u != owner.uid));
        if let Some(m) = holder {
            held.insert(name, m.workspace_ref.clone());
        }
    }
    held
}

/// A digest of a plan's inputs besides the listing: the owner and each mirror's name, cluster
/// and version (in any order).
/// Why the mirrors' data may be out of date: the latest attempt failed.
fn staleness(st: &WorkspaceState) -> Option<Staleness> {
    st.failure
        .as_ref()
        .map(|f| Staleness::from_failure(f.reason, f.code.as_deref(), st.last_success.as_deref()))
}

/// What a settled plan was made from besides the listing ([`Settled::inputs`]): the owner, the
/// mirrors, what the plan reads of the diagnoses (their generation) and the staleness.
fn settle_inputs(
    owner: &plan::Owner,
    existing: &HashMap<String, Arc<CachedMirror>>,
    st: &WorkspaceState,
    stale: Option<&Staleness>,
) -> u64 {
    let mut h = DefaultHasher::new();
    stale.map(|s| (s.reason.as_str(), &s.message)).hash(&mut h);
    plan_inputs(owner, existing)
        .wrapping_add(st.diagnoses.generation())
        .wrapping_add(h.finish())
}

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
    let api: Api<EmrRayCluster> = Api::namespaced(ctx.kube.client.clone(), &owner.namespace);
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

/// Mirrors read from the API server per page of [`read_statuses`].
const STATUS_PAGE: u32 = 100;

/// Mirrors of a plan read by name at most, when the workspace's label did not find them.
const STATUSES_BY_NAME: usize = 20;

/// The whole statuses of `wanted` mirrors (cluster ID → mirror name) of the workspace (its own
/// and those left without an owner), by cluster ID: for a plan that must keep mirrors' data as
/// it is (`plan::Plan::missing`). One paged LIST by the workspace label (a page at a time
/// decoded, only the wanted statuses kept); a wanted mirror it did not find (its label edited,
/// say) is read by name, up to [`STATUSES_BY_NAME`] of them.
async fn read_statuses(
    ctx: &Context,
    owner: &plan::Owner,
    wanted: &HashMap<String, String>,
) -> Result<HashMap<String, EmrRayClusterStatus>, kube::Error> {
    let ours = |m: &EmrRayCluster| {
        let controller = m
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true));
        controller.is_none_or(|o| o.uid == owner.uid) && wanted.contains_key(&m.spec.cluster_id)
    };
    let selector = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORKSPACE}={}",
        super::mirror::label_value(&owner.name)
    );
    let api: Api<EmrRayCluster> = Api::namespaced(ctx.kube.client.clone(), &owner.namespace);
    let mut params = ListParams::default().labels(&selector).limit(STATUS_PAGE);
    let mut statuses = HashMap::new();
    loop {
        let page = api.list(&params).await?;
        for m in page.items {
            if ours(&m)
                && let Some(status) = m.status
            {
                statuses.insert(m.spec.cluster_id, status);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let unfound: Vec<&String> = wanted
        .iter()
        .filter(|(id, _)| !statuses.contains_key(*id))
        .map(|(_, name)| name)
        .take(STATUSES_BY_NAME)
        .collect();
    for name in unfound {
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        for m in api.list(&by_name).await?.items {
            if ours(&m)
                && let Some(status) = m.status
            {
                statuses.insert(m.spec.cluster_id, status);
            }
        }
    }
    Ok(statuses)
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
    let api: Api<EmrRayCluster> = Api::namespaced(ctx.kube.client.clone(), &owner.namespace);
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
/// a backoff that grows with each consecutive refused pass, lengthened by `jitter` (drawn by
/// the caller). `now`/`at`: the time as status shows it and as the clock measures it. Pure.
pub(super) fn next_write_trouble(
    prev: Option<WriteTrouble>,
    report: WriteReport,
    (now, at): (&str, Instant),
    cap: Duration,
    jitter: f64,
) -> Option<WriteTrouble> {
    // The backoff grows with consecutive refused passes that made no progress. A pass that
    // wrote more mirrors than the last one (a policy was narrowed, a quota raised) starts over:
    // what is left is tried again soon, not after the backoff the refusals before it earned.
    // (A steady partial refusal writes nothing new, so it still backs off.)
    let written = |mirrors: usize, failed: usize| mirrors.saturating_sub(failed);
    let progressed = prev
        .as_ref()
        .is_some_and(|p| written(report.mirrors, report.failed) > written(p.mirrors, p.failed));
    let first = report.first?;
    // Planned last next time: the mirrors refused now, and those refused before that were not
    // tried now. Mirrors only skipped go first: they may well be accepted.
    let mut refused = report.refused;
    if let Some(p) = &prev {
        refused.extend(p.refused.intersection(&report.skipped).cloned());
    }
    let consecutive = match &prev {
        Some(p) if !progressed => p.consecutive.saturating_add(1),
        _ => 1,
    };
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
        retry_at: at
            .checked_add(crate::backoff::stretch(wait, jitter))
            .unwrap_or(at),
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
    warn!(conflicts = ?names, "mirror names held by another workspace");
    publish(
        &ctx.kube.recorder,
        &ws.object_ref(&()),
        EventType::Warning,
        Reason::MirrorNameConflict,
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
                &ctx.kube.recorder,
                workspace,
                EventType::Warning,
                Reason::MirrorWriteFailed,
                format!(
                    "{} of {} mirrors not written ({}): {}",
                    t.failed, t.mirrors, t.refusal, t.message
                ),
            )
            .await;
        }
        (None, Some(prev)) => {
            publish(
                &ctx.kube.recorder,
                workspace,
                EventType::Normal,
                EventReason::MirrorWritesRecovered,
                format!("every mirror is written again (after {prev} refusals)"),
            )
            .await;
        }
        _ => {}
    }
}

/// Builds the workspace status and writes it when it differs.
pub(super) async fn write_status(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &WorkspaceState,
    attempted: bool,
) -> Result<(), Error> {
    let prev = ws.status.clone().unwrap_or_default();
    let now = crate::time::Time::now();
    let mut s = status::workspace_status(&status::Input {
        prev: &prev,
        generation: ws.meta().generation,
        suspended: ws.spec.suspend,
        state: st,
        attempted,
        interval: decide::effective_interval(ws, ctx.settings.default_interval)
            .ok()
            .map(|i| i.to_string()),
        endpoint: crate::emr::endpoint::resolve(
            &ws.spec.region_id,
            ws.spec.network == EndpointNetwork::Vpc,
            ws.spec.endpoint.as_deref(),
        )
        .ok()
        .map(|u| u.to_string()),
        now: &now,
    });
    s.jobs = ws.spec.jobs_enabled().and(st.jobs.summary.clone());
    let labels = labels(ws);
    ctx.metrics
        .workspace_clusters
        .get_or_create(&labels)
        .set(s.clusters.unwrap_or(0));
    ctx.metrics
        .workspace_ready
        .get_or_create(&labels)
        .set(i64::from(crate::api::conditions::is_true(
            &s.conditions,
            crate::api::ConditionType::Ready,
        )));
    ctx.metrics
        .workspace_mirrors_unwritten
        .get_or_create(&labels)
        .set(st.write_trouble.as_ref().map_or(0, |t| t.failed as i64));
    ctx.metrics
        .workspace_suspended
        .get_or_create(&labels)
        .set(i64::from(ws.spec.suspend));
    if !status::needs_write(
        &s,
        &prev,
        ctx.settings.status_heartbeat,
        jiff::Timestamp::now(),
    ) {
        return Ok(());
    }
    let api: Api<EmrWorkspace> = Api::namespaced(ctx.kube.client.clone(), &labels.namespace);
    let _permit = ctx.kube.write_limiter.wait().await;
    let body = serde_json::json!({ "status": s });
    match apply::apply_ssa(&api, &ws.name_any(), body, apply::Subresource::Status).await {
        Ok(_) => {}
        // The workspace was deleted meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => {
            let refused = apply::Refused::from_error(&e);
            ctx.metrics
                .count_refusal(crate::metrics::KubeResource::EmrWorkspaces, refused.refusal);
            return Err(Error::StatusWrite(e));
        }
    }
    ctx.metrics.count_write(
        crate::metrics::KubeResource::EmrWorkspaces,
        crate::metrics::WriteOperation::ApplyStatus,
    );
    Ok(())
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
    fn a_settled_plan_covers_the_same_staleness_only() {
        let owner = plan::Owner {
            namespace: "ns".into(),
            name: "ws".into(),
            uid: "u".into(),
            workspace_id: "w-1".into(),
            region_id: "cn-hangzhou".into(),
            policy: Default::default(),
            shard: None,
        };
        let (st, mirrors) = (WorkspaceState::default(), HashMap::new());
        let inputs = |stale: Option<&Staleness>| settle_inputs(&owner, &mirrors, &st, stale);
        let failing = |r: Reason, since: &str| Staleness::from_failure(r, None, Some(since));
        let a = failing(Reason::RemoteUnavailable, "2026-01-01T00:00:00Z");
        // Retries of the same failure: the mirrors marked once need no plan (nor a read of
        // their statuses) again.
        assert_eq!(inputs(Some(&a)), inputs(Some(&a.clone())));
        // Another failure, another last success, or none: planned again.
        assert_ne!(inputs(Some(&a)), inputs(None));
        assert_ne!(
            inputs(Some(&a)),
            inputs(Some(&failing(Reason::Throttled, "2026-01-01T00:00:00Z")))
        );
        assert_ne!(
            inputs(Some(&a)),
            inputs(Some(&failing(
                Reason::RemoteUnavailable,
                "2026-01-02T00:00:00Z"
            )))
        );
    }

    #[test]
    fn write_trouble_grows_and_clears() {
        let cap = Duration::from_secs(300);
        let at = Instant::now();
        let s = Duration::from_secs;
        let forbidden = || report(Some(WriteRefusal::Forbidden));
        assert_eq!(
            next_write_trouble(None, report(None), ("t0", at), cap, 0.0),
            None
        );
        let t1 = next_write_trouble(None, forbidden(), ("t1", at), cap, 0.0).unwrap();
        assert_eq!((t1.consecutive, t1.since.as_str()), (1, "t1"));
        assert_eq!(t1.retry_at, at + s(5), "the first refusal waits 5 s");
        let t2 = next_write_trouble(Some(t1), forbidden(), ("t2", at), cap, 0.1).unwrap();
        assert_eq!((t2.consecutive, t2.since.as_str()), (2, "t1"));
        assert_eq!(
            t2.retry_at,
            at + s(11),
            "10 s, lengthened by the jitter given"
        );
        let other = report(Some(WriteRefusal::Invalid));
        let t3 = next_write_trouble(Some(t2.clone()), other, ("t3", at), cap, 0.0).unwrap();
        assert_eq!(
            (t3.consecutive, t3.since.as_str()),
            (3, "t3"),
            "another refusal starts its own `since`"
        );
        let mut capped = t3;
        capped.consecutive = 40;
        let t4 = next_write_trouble(Some(capped), forbidden(), ("t4", at), cap, 0.0).unwrap();
        assert_eq!(t4.retry_at, at + cap);
        assert_eq!(
            next_write_trouble(Some(t2), report(None), ("t5", at), cap, 0.0),
            None
        );
    }

    /// A pass that wrote more mirrors than the last (the refusal narrowed) starts the backoff
    /// over; passes that write nothing new keep growing it.
    #[test]
    fn write_trouble_starts_over_after_progress() {
        let cap = Duration::from_secs(300);
        let at = Instant::now();
        let refused = |failed: usize| WriteReport {
            failed,
            ..report(Some(WriteRefusal::Forbidden))
        };
        let mut t = next_write_trouble(None, refused(10), ("t0", at), cap, 0.0).unwrap();
        for _ in 0..5 {
            t = next_write_trouble(Some(t), refused(10), ("t", at), cap, 0.0).unwrap();
        }
        assert_eq!(t.consecutive, 6);
        let t = next_write_trouble(Some(t), refused(4), ("t", at), cap, 0.0).unwrap();
        assert_eq!(t.consecutive, 1, "6 of 10 written now: progress");
        assert_eq!(t.retry_at, at + Duration::from_secs(5));
        assert_eq!(t.since, "t0", "the same refusal keeps its `since`");
        let t = next_write_trouble(Some(t), refused(4), ("t", at), cap, 0.0).unwrap();
        assert_eq!(t.consecutive, 2, "nothing new written: backing off again");
    }
}
