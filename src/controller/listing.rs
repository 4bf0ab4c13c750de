//! Steps 3 and 4 of a reconcile: the remote listing (on its own schedule: the endpoint, the
//! credentials, then `ListRayCluster`, the queues and the jobs) with the Events that announce
//! failures and recoveries, and the diagnosis of unhealthy clusters (`GetRayCluster`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::apply::publish;
use super::context::{Context, labels};
use super::credentials;
use super::error::SyncError;
use super::state::{Decoded, Failure, Listing, WorkspaceState};
use crate::api::{EmrWorkspace, EndpointNetwork, EventReason, Interval, Reason};
use crate::backoff::jitter;
use crate::emr::EmrError;
use crate::metrics::FailureLabels;
use crate::time::now_rfc3339;

/// One remote listing: updates the listing or the failure; after a failure, schedules the
/// retry (after a success, `sync` schedules the next listing once the writes are done).
/// `decode`: every page is decoded, whatever its digest (a plan needs the clusters). Returns
/// the clusters when the listing was decoded (for this reconcile's plan only).
pub(super) async fn list_remote(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    interval: Interval,
    decode: bool,
) -> Option<Decoded> {
    ctx.metrics.sync_attempts.get_or_create(&labels(ws)).inc();
    st.last_attempt = Some(now_rfc3339());
    st.listed_at = Some(Instant::now());
    // The digests of the listing kept (an unchanged listing keeps it without decoding a page).
    let previous = st
        .listing
        .as_ref()
        .and(st.page_digests.as_ref())
        .filter(|_| !decode);
    match list_workspace(ws, ctx, previous).await {
        Ok(round) => record_listed(ws, ctx, st, round).await,
        Err(e) => {
            record_failure(ws, ctx, st, &e, interval).await;
            None
        }
    }
}

/// A complete listing: the clusters, the queues and jobs (their own failures kept apart), and
/// the Events that say the listings recovered.
async fn record_listed(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    (listed, queue_outcome, jobs): (Listed, QueueRound, JobRound),
) -> Option<Decoded> {
    if let Some((retention, result)) = jobs {
        if let Err(e) = &result {
            let reason = e.reason();
            warn!(%reason, error = %e, "remote job listing failed");
        }
        super::jobs::record(st, retention, result, &now_rfc3339());
    }
    let now = now_rfc3339();
    match super::queues::record(st, queue_outcome, &now) {
        (Some(message), _) => {
            warn!("{message}");
            publish(
                &ctx.kube.recorder,
                &ws.object_ref(&()),
                EventType::Warning,
                EventReason::QueueListingFailed,
                format!("{message}; status.queues keeps the last complete listing"),
            )
            .await;
        }
        (None, true) => {
            publish(
                &ctx.kube.recorder,
                &ws.object_ref(&()),
                EventType::Normal,
                EventReason::QueueListingRecovered,
                "listing the workspace's queues succeeded again".to_string(),
            )
            .await;
        }
        (None, false) => {}
    }
    if let Some(prev) = st.failure.take() {
        publish(
            &ctx.kube.recorder,
            &ws.object_ref(&()),
            EventType::Normal,
            EventReason::SyncRecovered,
            format!(
                "listing succeeded again after {} failed attempt(s) ({})",
                prev.consecutive, prev.reason
            ),
        )
        .await;
    }
    // An unchanged listing keeps its `Arc`: a settled workspace skips planning.
    let decoded = listed.listing.map(|(listing, decoded)| {
        // (Equal to the one kept: it stands.)
        if st.listing.as_deref() != Some(&listing) {
            st.listing = Some(Arc::new(listing));
        }
        decoded
    });
    st.page_digests = Some(listed.digests);
    st.last_success = Some(now_rfc3339());
    ctx.metrics
        .last_success
        .get_or_create(&labels(ws))
        .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    decoded
}

/// A failed listing: the failure (the mirrors keep what they show), an Event when its reason
/// changes, and the retry after a backoff, or when the remote asks (`x-acs-retry-after`).
async fn record_failure(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    e: &SyncError,
    interval: Interval,
) {
    let labels = labels(ws);
    let reason = e.reason();
    ctx.metrics
        .sync_failures
        .get_or_create(&FailureLabels {
            namespace: labels.namespace.clone(),
            workspace: labels.workspace.clone(),
            reason: reason.metric_label().to_string(),
        })
        .inc();
    let failure = Failure {
        called_remote: super::decide::called_the_remote(e),
        ..Failure::next(
            st.failure.as_ref(),
            reason,
            e.to_string(),
            e.remote().and_then(|r| r.code.clone()),
            e.remote().and_then(|r| r.request_id.clone()),
            &now_rfc3339(),
        )
    };
    if st.failure.as_ref().map(|f| f.reason) != Some(reason) {
        publish(
            &ctx.kube.recorder,
            &ws.object_ref(&()),
            EventType::Warning,
            EventReason::SyncFailed,
            failure.message.clone(),
        )
        .await;
    }
    warn!(%reason, error = %e, "remote listing failed");
    let n = failure.consecutive.clamp(1, 16) as u32;
    st.failure = Some(failure);
    let backoff = crate::backoff::exponential(n, Duration::from_secs(5), interval.as_duration());
    let backoff = match e.remote().and_then(|r| r.retry_after) {
        Some(ra) => ra.max(Duration::from_secs(1)),
        None => backoff,
    };
    st.next_due = Instant::now().checked_add(jitter(backoff, 0.2));
}

/// Fetches the instances of the workspace's unhealthy clusters whose details are due
/// (`diagnose`: once per listed form of a cluster, failures retried after a backoff), within
/// the namespace's share of the remote request budget and holding one of its listing slots
/// (`slot`: the one the listing held, else one taken here) — a fetch waits on the namespace's
/// rate share like a listing, so it must not hold a reconcile slot outside the namespace's
/// share. With no slot free, the fetches are put off by `busy_retry`. After a failed listing
/// nothing is fetched: the listing's retry comes first.
pub(super) async fn diagnose<S>(
    ws: &EmrWorkspace,
    ctx: &Context,
    st: &mut WorkspaceState,
    interval: Interval,
    slot: impl FnOnce() -> Option<S>,
    busy_retry: Duration,
) {
    let Some(listing) = st.listing.clone().filter(|_| st.failure.is_none()) else {
        return;
    };
    let now = Instant::now();
    let due = st
        .diagnoses
        .observe(&listing, now, ctx.settings.stuck_cluster_after);
    if due.is_empty() {
        return;
    }
    let Some(_slot) = slot() else {
        if let Some(until) = now.checked_add(busy_retry) {
            st.diagnoses.defer(now, until);
        }
        return;
    };
    let cap = interval.as_duration();
    let access = remote_access(ws, ctx).await;
    let ns = ws.namespace().unwrap_or_default();
    for id in due {
        let Some(listed) = st.diagnoses.listed(&id) else {
            continue;
        };
        let result = match &access {
            Ok((endpoint, creds)) => ctx
                .remote
                .emr
                .get_ray_cluster_within(Some(&ns), endpoint, &ws.spec.workspace_id, &id, creds)
                .await
                .map_err(SyncError::from),
            Err(e) => Err(SyncError::local(e.reason(), e.to_string())),
        };
        let recorded = match result {
            Ok(detail) => {
                debug!(cluster = %id, instances = detail.instances.as_ref().map_or(0, Vec::len), "fetched the instances of an unhealthy cluster");
                Ok(detail
                    .instances
                    .unwrap_or_default()
                    .iter()
                    .map(super::diagnose::instance_status)
                    .collect())
            }
            Err(e) => {
                // Only the error's reason and cleaned message: never a body.
                warn!(cluster = %id, reason = %e.reason(), error = %e, "GetRayCluster failed; the mirror keeps its instances and the call is retried after a backoff");
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
    let credentials = credentials::for_workspace(
        ws,
        &endpoint,
        &ctx.kube.client,
        &ctx.remote.credentials,
        &ctx.kube.recorder,
    )
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

/// A complete cluster listing and its clusters: `None` when every page was what it was last time
/// (the listing kept stands, nothing was decoded), and the pages' digests.
struct Listed {
    listing: Option<(Listing, Decoded)>,
    digests: crate::emr::PageDigests,
}

async fn list_workspace(
    ws: &EmrWorkspace,
    ctx: &Context,
    previous: Option<&crate::emr::PageDigests>,
) -> Result<(Listed, QueueRound, JobRound), SyncError> {
    let (endpoint, credentials) = remote_access(ws, ctx).await?;
    let ns = ws.namespace().unwrap_or_default();
    let id = &ws.spec.workspace_id;
    let listing = within(
        ctx,
        "listing",
        ctx.remote
            .emr
            .list_ray_clusters_since(Some(&ns), &endpoint, id, &credentials, previous),
    )
    .await?;
    debug!(
        clusters = listing.clusters.len(),
        requests = listing.requests,
        unchanged = listing.unchanged,
        "listed"
    );
    let queues = within(
        ctx,
        "listing the queues",
        ctx.remote
            .emr
            .list_workspace_queues_within(Some(&ns), &endpoint, id, &credentials),
    )
    .await
    .map(|l| l.queues);
    let jobs = match ws.spec.jobs_enabled() {
        None => None,
        Some(spec) => Some(match spec.retention() {
            Err(e) => (
                Interval::from_secs(0),
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
                let listed = within(
                    ctx,
                    "job listing",
                    ctx.remote.emr.list_ray_jobs(
                        Some(&ns),
                        &endpoint,
                        id,
                        &credentials,
                        window,
                        ctx.settings.max_jobs_per_workspace,
                    ),
                )
                .await;
                if let Ok(l) = &listed {
                    debug!(jobs = l.jobs.len(), requests = l.requests, "listed jobs");
                }
                (retention, listed)
            }
        }),
    };
    let page = ctx.remote.emr.config().page_size.max(1) as usize;
    let listed = Listed {
        listing: (!listing.unchanged).then(|| Listing::decoded(listing.clusters, page)),
        digests: listing.digests,
    };
    Ok((listed, queues, jobs))
}

/// One remote call, bounded by the listing timeout (and a margin: the client enforces the
/// timeout itself; this bounds everything around it). `what` names it in the error.
async fn within<T>(
    ctx: &Context,
    what: &str,
    call: impl std::future::Future<Output = Result<T, EmrError>>,
) -> Result<T, SyncError> {
    let limit = ctx.settings.listing_timeout;
    match tokio::time::timeout(limit.saturating_add(Duration::from_secs(5)), call).await {
        Ok(result) => result.map_err(SyncError::from),
        Err(_) => Err(SyncError::from(EmrError::new(
            crate::emr::ErrorKind::Timeout,
            format!("{what} did not finish within {}s", limit.as_secs()),
        ))),
    }
}
