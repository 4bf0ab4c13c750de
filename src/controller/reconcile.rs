//! The reconcile of one `EmrWorkspace`, read top to bottom. Each step is a function in the
//! file its name gives; every decision is a pure function of [`super::decide`] (or of
//! [`super::plan`] and [`super::status`]):
//!
//! 1. **guards** (here): the caches are listed, this replica serves the namespace, the
//!    workspace is not being deleted;
//! 2. **spec** (here, `admit`): the sync interval, suspension, duplicates
//!    (`decide::senior_to`);
//! 3. **listing** ([`super::listing`]): when due (`decide::listing_due`) and the namespace
//!    has a slot free: the endpoint, the credentials ([`super::credentials`]), then
//!    `ListRayCluster`, the queues and the jobs. The operator keeps only the identities of
//!    the listed clusters, so when the mirrors need a plan (`write::is_settled` says they are
//!    not as the last plan left them: edited or deleted by hand, say) the listing decodes
//!    every page and, if it was not due, comes now (`decide::refresh_at`);
//! 4. **diagnosis** (`listing::diagnose`): `GetRayCluster` for unhealthy clusters, in the
//!    listing's namespace slot or one taken for it;
//! 5. **mirrors** ([`super::write`](mod@super::write): [`super::plan`] decides, [`super::apply`] writes) and job
//!    mirrors ([`super::jobs`]);
//! 6. **status** (`write::write_status`, built by [`super::status`]);
//! 7. **requeue** (`decide::requeue_after`); a failed reconcile, [`error_policy`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{Instrument as _, warn};

use super::context::{Context, key, labels};
use super::error::Error;
use super::lifecycle::{forget_key, has_departed, mirror_shard};
use super::slots::Slot;
use super::state::{Failure, WorkspaceState};
use super::{decide, jobs, listing, queues, series, write};
use crate::api::{EmrWorkspace, Interval, Reason};
use crate::backoff::{draw, jitter};
use crate::metrics::NamespaceLabels;
use crate::time::now_rfc3339;

/// How long a reconcile waits for the first complete list of the caches it decides on.
const CACHES_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How soon unhealthy clusters' fetches whose namespace had no slot free are tried again.
const NAMESPACE_BUSY_RETRY: Duration = Duration::from_secs(1);
/// How soon a due workspace whose namespace had no listing slot free tries again if it is not
/// woken before (it is woken when a slot frees: see [`super::slots`]).
const SLOT_WAIT_FALLBACK: Duration = Duration::from_secs(30);

/// The shortest time between the start of a listing and a listing that is not due but made
/// because a plan needs the clusters (`decide::refresh_at`).
const REFRESH_GAP: Duration = Duration::from_secs(5);

/// Reconciles one workspace; stops at once (writing nothing more) when leadership is lost.
/// Everything it logs carries the workspace's namespace and name (its span).
pub async fn reconcile(ws: Arc<EmrWorkspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        namespace = %ws.namespace().unwrap_or_default(),
        workspace = %ws.name_any(),
    );
    let _timer = ctx.metrics.reconcile_timer();
    let stop = ctx.stop.clone();
    async move {
        tokio::select! {
            biased;
            _ = stop.cancelled() => Ok(Action::await_change()),
            r = reconcile_workspace(ws, ctx) => r,
        }
    }
    .instrument(span)
    .await
}

async fn reconcile_workspace(ws: Arc<EmrWorkspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    // 1. Guards. Decisions need the mirror, workspace and namespace caches: wait for their
    // first complete list (deciding on a partial cache could create duplicates or miss mirrors
    // to prune).
    if !caches_ready(&ctx).await {
        warn!("caches not listed after {CACHES_READY_TIMEOUT:?}; trying again later");
        return Ok(Action::requeue(CACHES_READY_TIMEOUT));
    }
    let k = key(&ws);
    if mirror_shard(&ctx, &ws).is_err() {
        // Another shard's workspace (a sharded replica watches every workspace and serves those
        // of its namespaces), or one whose namespace just left: nothing is written or kept.
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    ctx.metrics.reconciles.inc();
    if ws.meta().deletion_timestamp.is_some() {
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    let mut st = ctx.caches.states.get(&k, &ws.uid().unwrap_or_default());
    let started = Instant::now();
    // 2.–5. The sync.
    let attempted = sync(&ws, &ctx, &mut st).await;
    ctx.caches.states.put(&k, st.clone());
    if has_departed(&ctx, &ws) {
        // Deleted, or its namespace moved to another shard meanwhile: not ours to write or
        // remember any more (the series this sync touched go too).
        forget_key(&ctx, &k);
        return Ok(Action::await_change());
    }
    // 6. Status.
    write::write_status(&ws, &ctx, &st, attempted).await?;
    if attempted {
        // A sync is listing, mirror writes and status write: its end is observable here.
        ctx.metrics
            .sync_duration
            .get_or_create(&labels(&ws))
            .observe(started.elapsed().as_secs_f64());
    }
    crate::controller::lock(&ctx.caches.errors).remove(&k);
    // 7. Requeue. Instances are fetched only while the listing succeeds: after a failed one,
    // its retry comes first.
    let now = Instant::now();
    let next_diagnosis = st
        .failure
        .is_none()
        .then(|| {
            st.diagnoses
                .next_wakeup(ctx.settings.stuck_cluster_after, now)
        })
        .flatten();
    let invalid_spec = st
        .failure
        .as_ref()
        .is_some_and(|f| f.reason == Reason::InvalidSpec);
    Ok(
        match decide::requeue_after(
            now,
            st.next_wakeup(),
            next_diagnosis,
            ws.spec.suspend,
            invalid_spec,
        ) {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        },
    )
}

/// Whether the mirror, workspace and (in a shard) namespace caches have their first complete
/// list, waiting at most [`CACHES_READY_TIMEOUT`].
async fn caches_ready(ctx: &Context) -> bool {
    tokio::time::timeout(CACHES_READY_TIMEOUT, async {
        ctx.caches.mirrors.store().wait_ready().await;
        ctx.caches.workspaces_ready.wait().await;
        if let Some(shard) = &ctx.settings.shard {
            shard.wait_ready().await;
        }
    })
    .await
    .is_ok()
}

/// Steps 2–5: the spec, then the listing when due, the diagnosis, the mirror and job writes
/// unless backing off. Returns whether a remote listing was attempted.
async fn sync(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) -> bool {
    // 2. Spec.
    let Some(interval) = admit(ws, ctx, st) else {
        return false;
    };
    // 3. Listing.
    let requested = decide::requested_sync(ws, st);
    let now = Instant::now();
    let mut scheduled = std::mem::take(&mut st.waiting_for_slot)
        || decide::listing_due(
            now,
            st.next_due,
            st.failure.as_ref().is_some_and(|f| f.called_remote),
            st.synced_generation != ws.meta().generation || requested.is_some(),
        );
    // A retry of refused writes needs a decoded listing: a listing due moments before it waits
    // for it, so that the two are one listing.
    let retry = st.write_trouble.as_ref().map(|t| t.retry_at);
    if scheduled
        && st.failure.is_none()
        && let Some(at) = decide::wait_for_write_retry(now, retry, REFRESH_GAP)
    {
        scheduled = false;
        st.next_due = Some(at);
    }
    // The mirrors need a plan (not as the last settled one left them): the plan needs the
    // clusters as listed now, so the listing decodes every page, whatever their digests; and
    // comes now if it was not due (a mirror edited or deleted by hand), at most every
    // `REFRESH_GAP` — unless the last listing failed: then the mirrors keep what they show
    // and the retry keeps its backoff.
    let may_write = st.may_write(now) && !has_departed(ctx, ws);
    let unsettled = may_write && !write::is_settled(ws, ctx, st, scheduled);
    let refresh = unsettled
        && !scheduled
        && st.failure.is_none()
        && st.listing.is_some()
        && decide::refresh_at(st.listed_at, REFRESH_GAP, now) <= now;
    let mut due = scheduled || refresh;
    // The namespace's listing slot, or none now: then this reconcile gives its slot back, the
    // workspace waits in its namespace's queue and comes again when a slot frees, still due.
    let slot = due.then(|| listing_slot(ws, ctx, true)).flatten();
    if due && slot.is_none() {
        due = false;
        st.waiting_for_slot = true;
        st.next_due = Instant::now().checked_add(jitter(SLOT_WAIT_FALLBACK, 0.5));
    }
    let mut clusters = None;
    if due {
        st.synced_generation = ws.meta().generation;
        clusters = listing::list_remote(ws, ctx, st, interval, unsettled).await;
        if requested.is_some() {
            st.handled_request = requested;
        }
    }
    // 4. Diagnosis: why unhealthy clusters are unhealthy, once per change, retried on its own
    // backoff; in the listing's slot, or one of the namespace's taken for it.
    listing::diagnose(
        ws,
        ctx,
        st,
        interval,
        || slot.or_else(|| listing_slot(ws, ctx, false)),
        jitter(NAMESPACE_BUSY_RETRY, 0.5),
    )
    .await;
    series::update(ws, ctx, st);
    queues::update_series(ws, ctx, st);
    // 5. Mirrors, then job mirrors.
    let mut needs_listing = false;
    if st.may_write(Instant::now()) && !has_departed(ctx, ws) {
        // Refused writes are retried at least once an interval, so that a fixed cause is
        // repaired within one interval.
        let cap = ctx.settings.write_backoff_cap.min(interval.as_duration());
        needs_listing =
            write::write_mirrors(ws, ctx, st, (cap, draw(0.1)), clusters.as_ref()).await;
    }
    // The listing's clusters serve this reconcile's plan only.
    drop(clusters);
    if !has_departed(ctx, ws) {
        jobs::write_jobs(ws, ctx, st).await;
    }
    if due && st.failure.is_none() {
        // The next listing is an interval after this sync's writes, not after its listing:
        // when the API server is slow to take the writes (an initial sync), a workspace is not
        // listed again before its mirrors are written.
        st.next_due = Instant::now().checked_add(jitter(interval.as_duration(), 0.1));
    }
    if needs_listing {
        // A plan waits for the clusters as listed: the listing comes as soon as it may.
        let now = Instant::now();
        let at = decide::refresh_at(st.listed_at, REFRESH_GAP, now);
        st.next_due = Some(st.next_due.map_or(at, |d| d.min(at)));
    }
    due
}

/// Step 2: the workspace's sync interval, or `None` when it is not to be synced now: an
/// invalid interval (`InvalidSpec`), suspended, or a duplicate of another workspace of the
/// namespace (`DuplicateWorkspace`, looked at again every interval). Clears those failures
/// once they no longer hold.
fn admit(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) -> Option<Interval> {
    let interval = match decide::effective_interval(ws, ctx.settings.default_interval) {
        Ok(i) => i,
        Err(e) => {
            st.failure = Some(Failure::next(
                st.failure.as_ref(),
                Reason::InvalidSpec,
                format!("syncInterval: {e}"),
                None,
                None,
                &now_rfc3339(),
            ));
            st.next_due = None;
            return None;
        }
    };
    st.clear_failure(Reason::InvalidSpec);
    if ws.spec.suspend {
        return None;
    }
    if let Some(original) = duplicate_of(ws, ctx) {
        // Another workspace of the namespace owns the mirrors of this remote workspace.
        let msg = format!(
            "EmrWorkspace {original} of this namespace already mirrors remote workspace {} \
             ({}); delete this one",
            ws.spec.workspace_id, ws.spec.region_id
        );
        st.failure = Some(Failure::next(
            st.failure.as_ref(),
            Reason::DuplicateWorkspace,
            msg,
            None,
            None,
            &now_rfc3339(),
        ));
        // Looked at again every interval: when the original goes, this one takes over.
        st.next_due = Instant::now().checked_add(interval.as_duration());
        return None;
    }
    st.clear_failure(Reason::DuplicateWorkspace);
    Some(interval)
}

/// One of the namespace's listing slots, if one is free, counted in `namespace_listings`
/// while held. With none free and `wait`, the workspace is woken when one frees.
fn listing_slot(ws: &EmrWorkspace, ctx: &Context, wait: bool) -> Option<(Slot, Held)> {
    let ns = ws.namespace().unwrap_or_default();
    let slots = &ctx.caches.namespace_slots;
    let permit = slots.try_acquire(&ns, wait.then(|| ObjectRef::from_obj(ws)).as_ref())?;
    let held = ctx
        .metrics
        .namespace_listings
        .get_or_create(&NamespaceLabels { namespace: ns })
        .clone();
    held.inc();
    Some((permit, Held(held)))
}

/// A listing slot counted in `namespace_listings` while held (also when the reconcile holding
/// it is dropped: leadership lost).
struct Held(prometheus_client::metrics::gauge::Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The workspace of the same namespace that already mirrors the same remote workspace, if any:
/// the one that owns mirrors; when none (or both) do, the first created (on a tie, the first
/// name).
fn duplicate_of(ws: &EmrWorkspace, ctx: &Context) -> Option<String> {
    let ns = ws.namespace();
    let others: Vec<Arc<EmrWorkspace>> = ctx
        .caches
        .workspaces
        .state()
        .into_iter()
        .filter(|o| o.namespace() == ns && o.uid() != ws.uid())
        .filter(|o| o.meta().deletion_timestamp.is_none())
        // (The cheap comparison first: most workspaces differ in their ID.)
        .filter(|o| {
            o.spec.workspace_id == ws.spec.workspace_id
                && decide::remote_identity(&o.spec) == decide::remote_identity(&ws.spec)
        })
        .collect();
    if others.is_empty() {
        return None;
    }
    let ns = ns.unwrap_or_default();
    let seniority = |w: &EmrWorkspace| decide::Seniority {
        owns_no_mirrors: ctx
            .caches
            .mirrors
            .current(&ns, &w.uid().unwrap_or_default())
            .is_empty(),
        created: w.meta().creation_timestamp.clone(),
        name: w.name_any(),
    };
    decide::senior_to(&seniority(ws), others.iter().map(|o| seniority(o)))
}

/// Retries a failed reconcile with a per-workspace backoff (`decide::reconcile_retry`).
pub fn error_policy(ws: Arc<EmrWorkspace>, err: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut errors = crate::controller::lock(&ctx.caches.errors);
        let n = errors.entry(key(&ws)).or_default();
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics.count_reconcile_error(err.metric_label());
    let wait = decide::reconcile_retry(failures, draw(0.2));
    warn!(workspace = %key(&ws), error = %err, retry_in = ?wait, "reconcile failed; backing off");
    Action::requeue(wait)
}
